"""f-AnoGAN (reconstruction / fanogan): the head's output is izi_f's residual, a planted outlier
is flagged at its place, batch == one-by-one, seeded fit is deterministic, ONNX (engine) == torch
through a calibrated bundle."""
import functools

import numpy as np
import pytest
import torch

from engines.backbones.heads import load_head
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings
from tests.unit._scorer_data import data, fit_params_arrays, head_scores, peak_is_at_defect, preprocess, scorer_of

SMALL = {"latent_dim": 8, "hidden": 64, "disc_hidden": 32, "gan_steps": 300, "encoder_steps": 300,
         "batch_size": 256, "n_critic": 3}


def _settings(**over):
    return small_settings(scorer={"type": "reconstruction", "method": "fanogan", "fanogan": {**SMALL, **over}},
                          engine=FP32_ENGINE)


@functools.lru_cache(maxsize=1)
def _fit():
    return fit_params_arrays(_settings().scorer, seed=0, feats=data()[0])


def test_output_is_izi_f_residual():
    params, arrays = _fit()
    head = load_head(params["head"], arrays)
    x = torch.from_numpy(data()[1][:2])
    with torch.no_grad():
        z = head.norm(x)
        r = head.generator(head.encoder(z))
        want = ((r - z) ** 2).mean(1, keepdim=True) + head.kappa * ((head.disc_features(r) - head.disc_features(z)) ** 2).mean(
            1, keepdim=True)
        np.testing.assert_allclose(head(x).numpy(), want.numpy(), rtol=1e-5)
    assert params["kappa"] == 1.0 and 0 < float(head.kappa)
    assert set(params["final_losses"]) == {"critic", "generator", "encoder"}


def test_planted_defect_scores_above_every_good_part_and_points_at_it():
    params, arrays = _fit()
    _, test, _, labels = data()
    sm = scorer_of(params, arrays).score({"patch_scores": head_scores(params, arrays, test)}, (TEST_SIZE, TEST_SIZE))
    assert sm.image_scores[labels == 1].min() > sm.image_scores[labels == 0].max()
    assert peak_is_at_defect(sm.pixel_maps[-1])


def test_batch_scores_equal_one_by_one():
    params, arrays = _fit()
    test = data()[1]
    whole = head_scores(params, arrays, test)
    one = np.concatenate([head_scores(params, arrays, test[i:i + 1]) for i in range(len(test))])
    np.testing.assert_allclose(one, whole, rtol=1e-4, atol=1e-6)


def test_seeded_fit_is_deterministic():
    s = _settings(gan_steps=3, encoder_steps=3)
    a = fit_params_arrays(s.scorer, seed=2, feats=data()[0][:4])[1]
    b = fit_params_arrays(s.scorer, seed=2, feats=data()[0][:4])[1]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


@pytest.fixture(scope="module")
def fg_bundle(tmp_path_factory, golden_dir):
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("fg") / "bundle"
    calibrate(_settings(gan_steps=20, encoder_steps=20), golden_dir, out, progress=False)
    return out


def test_head_parity_across_engines(fg_bundle):
    """The bundle's network (backbone + fanogan head) gives the same patch residuals on
    onnxruntime, the torch engine and OpenVINO fp32."""
    from engines.torch_engine import TorchEngineConfig
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline
    from inspector.settings import engine_config

    bundle = load_bundle(fg_bundle)
    assert bundle.manifest.network.as_dict()["head"]["kind"] == "fanogan"
    x = preprocess(data()[2])
    outs = {}
    configs = {"onnxruntime": _settings().engine, "torch": TorchEngineConfig()}
    try:
        import openvino  # noqa: F401

        configs["openvino"] = engine_config(type="openvino", precision="fp32")
    except ImportError:
        pass
    for name, config in configs.items():
        pipeline = build_pipeline(bundle, config)
        try:
            outs[name] = pipeline.engine.run(x)["patch_scores"]
        finally:
            pipeline.engine.close()
    for name, out in outs.items():
        np.testing.assert_allclose(out, outs["onnxruntime"], rtol=1e-3, atol=1e-4 * float(np.abs(out).max()),
                                   err_msg=name)
