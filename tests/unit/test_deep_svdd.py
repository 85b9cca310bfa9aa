"""Deep SVDD (hypersphere / deep_svdd): bias-free head, centre rule, planted outlier flagged at
its place, soft boundary, determinism, ONNX (engine) == torch, bundle round trip."""
import functools

import numpy as np
import pytest
import torch

from engines.backbones.heads import FeaturesWithHead, SvddHead, load_head
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings
from tests.unit._scorer_data import fit_params_arrays, scorer_of, _net, data, engine_features, head_scores, peak_is_at_defect, preprocess

TRAIN = {"epochs": 4, "batch_size": 256, "patience": 3}


def _settings(**svdd):
    return small_settings(scorer={"type": "hypersphere", "method": "deep_svdd",
                                  "deep_svdd": {"training": TRAIN, **svdd}}, engine=FP32_ENGINE)


@functools.lru_cache(maxsize=None)
def _fit(seed=0, **svdd):
    """(params, arrays) fitted on the golden features; once per process for each (seed, settings)."""
    return fit_params_arrays(_settings(**svdd).scorer, seed=seed, feats=data()[0])


def test_head_has_no_bias_and_the_centre_avoids_zero():
    params, arrays = _fit()
    head = load_head(params["head"], arrays)
    assert all(conv.bias is None for conv in head.convs)
    assert (np.abs(arrays["head.centre"]) >= 0.1 - 1e-7).all()


def test_planted_defect_scores_above_every_good_part_and_points_at_it():
    params, arrays = _fit()
    _, test, _, labels = data()
    sm = scorer_of(params, arrays).score({"patch_scores": head_scores(params, arrays, test)},
                                                          (TEST_SIZE, TEST_SIZE))
    assert sm.image_scores[labels == 1].min() > sm.image_scores[labels == 0].max()
    assert peak_is_at_defect(sm.pixel_maps[-1])


def test_training_pulls_golden_patches_towards_the_centre():
    params, arrays = _fit()
    golden = data()[0]
    trained = head_scores(params, arrays, golden).mean()
    fresh = dict(arrays)
    torch.manual_seed(0)
    init = SvddHead(golden.shape[1], (256,), 64)
    for k, v in init.state_dict().items():
        if k.startswith("convs"):
            fresh["head." + k] = v.numpy()
    assert trained < 0.5 * head_scores(params, fresh, golden).mean()


def test_soft_boundary_keeps_about_nu_of_golden_patches_outside_the_radius():
    params, arrays = _fit(objective="soft_boundary", nu=0.2)
    assert params["radius_sq"] > 0
    dist = head_scores(params, arrays, data()[0]).ravel()
    outside = float((dist > params["radius_sq"]).mean())
    assert 0.05 < outside < 0.4
    sm = scorer_of(params, arrays).score({"patch_scores": head_scores(params, arrays, data()[1])},
                                                          (TEST_SIZE, TEST_SIZE))
    assert sm.image_scores[-1] > sm.image_scores[:-1].max()


def test_batch_scores_equal_one_by_one():
    params, arrays = _fit()
    scorer = scorer_of(params, arrays)
    maps = head_scores(params, arrays, data()[1])
    whole = scorer.score({"patch_scores": maps}, (TEST_SIZE, TEST_SIZE))
    for i in range(len(maps)):
        one = scorer.score({"patch_scores": maps[i:i + 1]}, (TEST_SIZE, TEST_SIZE))
        np.testing.assert_allclose(one.image_scores[0], whole.image_scores[i], rtol=1e-6)
        np.testing.assert_allclose(one.pixel_maps[0], whole.pixel_maps[i], rtol=1e-5, atol=1e-6)
    one_head = np.concatenate([head_scores(params, arrays, data()[1][i:i + 1]) for i in range(len(maps))])
    np.testing.assert_allclose(one_head, maps, rtol=1e-4, atol=1e-5)


def test_seeded_fit_is_deterministic():
    a = fit_params_arrays(_settings().scorer, seed=3, feats=data()[0][:6])[1]
    b = fit_params_arrays(_settings().scorer, seed=3, feats=data()[0][:6])[1]
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_onnx_export_of_backbone_plus_head_matches_torch(tmp_path):
    import onnxruntime as ort

    from engines.backbones.export import export_onnx

    params, arrays = _fit()
    net = FeaturesWithHead(_net(), load_head(params["head"], arrays)).eval()
    path = export_onnx(net, tmp_path / "n.onnx", (3, TEST_SIZE, TEST_SIZE), "images", ("patch_scores",))
    x = preprocess(data()[2])
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * float(np.abs(want).max()))


@pytest.fixture(scope="module")
def svdd_bundle(tmp_path_factory, golden_dir):
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("svdd") / "bundle"
    calibrate(_settings(), golden_dir, out, progress=False)
    return out


def test_bundle_round_trip_engines_and_in_memory_agree(svdd_bundle, golden_dir):
    from calibration.golden import read_golden
    from engines.torch_engine import TorchEngineConfig
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline

    bundle = load_bundle(svdd_bundle)
    assert bundle.manifest.network.kind == "patch_features_head"
    assert bundle.manifest.engine.output_names == ["patch_scores"]
    x = preprocess(data()[2])
    ort_pipe = build_pipeline(bundle, _settings().engine)
    torch_pipe = build_pipeline(bundle, TorchEngineConfig())
    got_ort = ort_pipe.scorer.score(ort_pipe.engine.run(x), (TEST_SIZE, TEST_SIZE)).image_scores
    got_torch = torch_pipe.scorer.score(torch_pipe.engine.run(x), (TEST_SIZE, TEST_SIZE)).image_scores
    np.testing.assert_allclose(got_ort, got_torch, rtol=1e-3)
    # the in-memory fitter (same seed) on the features calibrate fitted on (golden_dir's images
    # through the calibrating engine) trains the very head the bundle holds. (Not torch's features
    # of the same parts: they differ by ~1e-6 and training amplifies that; see test_autoencoder.)
    settings = _settings()
    golden = read_golden(golden_dir, max_pixels=settings.preprocess.max_pixels).images
    params, arrays = fit_params_arrays(settings.scorer, seed=0, feats=engine_features(golden, settings))
    for k, v in arrays.items():
        np.testing.assert_array_equal(bundle.arrays[k], v, err_msg=k)
    want = scorer_of(params, arrays).score(
        {"patch_scores": head_scores(params, arrays, data()[1])}, (TEST_SIZE, TEST_SIZE)).image_scores
    np.testing.assert_allclose(got_ort, want, rtol=1e-3)
    assert got_ort[-1] > got_ort[:-1].max()


def test_openvino_runs_the_same_backbone_plus_head(svdd_bundle):
    pytest.importorskip("openvino")
    from engines.onnxruntime_engine import OnnxRuntimeEngineConfig
    from engines.openvino_engine import OpenVinoEngineConfig
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline

    bundle = load_bundle(svdd_bundle)
    x = preprocess(data()[2])
    a = build_pipeline(bundle, OnnxRuntimeEngineConfig()).engine.run(x)["patch_scores"]
    b = build_pipeline(bundle, OpenVinoEngineConfig(precision="fp32")).engine.run(x)["patch_scores"]
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * float(np.abs(a).max()))
