"""Discriminator (discriminative / discriminator, SimpleNet-style): head shapes and loss, training
separates a planted defect (tiny synthetic features and backbone features of drawn parts),
batch == one-by-one, determinism, the head in one network on onnxruntime / OpenVINO / torch,
bundle round trip."""
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from calibration.methods import NoProgress
from calibration.methods.discriminator import _identity_adaptor, fit, truncated_l1
from engines.backbones.heads import DiscriminatorHead, FeaturesWithHead, build_head, load_head
from inspector.settings import settings_from_dict
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings
from tests.unit._scorer_data import (_net, data, engine_features, fit_params_arrays, head_scores, peak_is_at_defect,
                                     preprocess, scorer_of)

TRAIN = {"epochs": 6, "batch_size": 512, "patience": 3, "max_patches": 16000}


def _settings(**section):
    return small_settings(scorer={"type": "discriminative", "method": "discriminator",
                                  "discriminator": {"hidden_dim": 64, "training": TRAIN, **section}},
                          engine=FP32_ENGINE)


@functools.lru_cache(maxsize=None)
def _fit(seed=0):
    return fit_params_arrays(_settings().scorer, seed=seed, feats=data()[0])


def test_family_defaults_to_the_discriminator_and_refuses_unknown_keys():
    from inspector.errors import ConfigError

    s = settings_from_dict({"scorer": {"type": "discriminative"}}, base_dir=Path("/"))
    assert s.scorer.method == "discriminator" and s.scorer.discriminator.adapt_dim is None
    # setting one training field keeps the method's other training defaults (not TrainingConfig's)
    s = settings_from_dict({"scorer": {"type": "discriminative", "discriminator": {"training": {"epochs": 20}}}},
                           base_dir=Path("/"))
    t = s.scorer.discriminator.training
    assert (t.epochs, t.batch_size, t.max_patches, t.patience) == (20, 2048, 60_000, 3)
    with pytest.raises(ConfigError, match="noise"):
        settings_from_dict({"scorer": {"type": "discriminative", "discriminator": {"noise": 1}}},
                           base_dir=Path("/"))


def test_head_shapes_identity_adaptor_and_loss():
    head = build_head({"kind": "discriminator", "in_dim": 12, "adapt_dim": 12, "hidden_dim": 8})
    assert isinstance(head, DiscriminatorHead)
    _identity_adaptor(head)
    x = torch.randn(3, 12, 5, 7)
    with torch.no_grad():
        assert head(x).shape == (3, 1, 5, 7)
        torch.testing.assert_close(head.adapt(x), x)  # standardise (0, 1) then identity
    # a head whose logits are all -margin on normal patches and +margin on noisy ones has loss 0
    # only if it tells them apart; a fresh head does not
    with torch.no_grad():
        assert float(truncated_l1(head, torch.randn(64, 12), 1.0, 0.5)) > 0.1
    narrow = build_head({"kind": "discriminator", "in_dim": 12, "adapt_dim": 4, "hidden_dim": 8})
    _identity_adaptor(narrow)  # not square: torch's init stays
    assert narrow(x).shape == (3, 1, 5, 7)


def test_training_separates_a_planted_defect_on_tiny_synthetic_features():
    """Golden: 40 maps of 16-d features from one Gaussian cluster; test: one map with a patch
    moved 1.5 golden stds along every channel. The fit never saw a defect."""
    rng = np.random.default_rng(3)
    golden = rng.normal(0.0, 1.0, (40, 16, 8, 8)).astype(np.float32) * 0.3 + 2.0
    test = rng.normal(0.0, 1.0, (6, 16, 8, 8)).astype(np.float32) * 0.3 + 2.0
    test[5, :, 2, 6] += 0.45
    config = _settings(noise_std=0.5, training={"epochs": 10, "batch_size": 256, "patience": 10,
                                                "max_patches": 5000}).scorer
    state = fit(golden, config, 0, NoProgress())
    out = head_scores(state.params.model_dump(mode="json"), state.arrays(), test)
    assert out.shape == (6, 1, 8, 8)
    assert np.unravel_index(int(out[5, 0].argmax()), (8, 8)) == (2, 6)
    assert out[5, 0, 2, 6] > out[:5].max()
    # 2560 golden patches drawn (with repeats) to 5000: the step count does not depend on the set's size
    assert state.params.training.epochs_run == 10 and state.params.patches_seen == 5000


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
    np.testing.assert_allclose(one, whole, rtol=1e-4, atol=1e-5 * float(np.abs(whole).max()))
    scorer = scorer_of(params, arrays)
    sm = scorer.score({"patch_scores": whole}, (TEST_SIZE, TEST_SIZE))
    assert sm.image_scores.shape == (len(test),) and sm.patch_maps.shape == (len(test), *whole.shape[-2:])
    for i in range(len(test)):
        s1 = scorer.score({"patch_scores": whole[i:i + 1]}, (TEST_SIZE, TEST_SIZE))
        assert s1.image_scores[0] == sm.image_scores[i]
        np.testing.assert_allclose(s1.pixel_maps[0], sm.pixel_maps[i], rtol=1e-5, atol=1e-6)


def test_seeded_fit_is_deterministic_and_seed_matters():
    s = _settings(training={"epochs": 2, "batch_size": 512, "max_patches": 2000})
    a = fit_params_arrays(s.scorer, seed=2, feats=data()[0][:6])[1]
    b = fit_params_arrays(s.scorer, seed=2, feats=data()[0][:6])[1]
    c = fit_params_arrays(s.scorer, seed=3, feats=data()[0][:6])[1]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["head.hidden.weight"], c["head.hidden.weight"])


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
def disc_bundle(tmp_path_factory, golden_dir):
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("disc") / "bundle"
    calibrate(_settings(), golden_dir, out, progress=False)
    return out


def test_bundle_runs_alike_on_onnxruntime_openvino_and_torch(disc_bundle, golden_dir):
    """Engine head parity: the bundle's one network (backbone + discriminator) on every CPU
    engine, through the daemon's own assembly; and the in-memory fitter on the calibrating
    engine's features trains the very head the bundle holds."""
    from calibration.golden import read_golden
    from engines.onnxruntime_engine import OnnxRuntimeEngineConfig
    from engines.torch_engine import TorchEngineConfig
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline

    bundle = load_bundle(disc_bundle)
    assert bundle.manifest.network.as_dict()["head"]["kind"] == "discriminator"
    assert bundle.manifest.engine.output_names == ["patch_scores"]
    x = preprocess(data()[2])
    pytest.importorskip("openvino")
    from engines.openvino_engine import OpenVinoEngineConfig

    runs = {"onnxruntime": OnnxRuntimeEngineConfig(), "torch": TorchEngineConfig(),
            "openvino": OpenVinoEngineConfig(precision="fp32")}
    out = {}
    for name, config in runs.items():
        pipe = build_pipeline(bundle, config)
        try:
            out[name] = pipe.engine.run(x)["patch_scores"]
        finally:
            pipe.engine.close()
    ref = out["onnxruntime"]
    assert ref.shape == (len(x), 1, TEST_SIZE // 8, TEST_SIZE // 8)
    assert set(out) == {"onnxruntime", "torch", "openvino"}
    for name, got in out.items():
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()), err_msg=name)
    settings = _settings()
    golden = read_golden(golden_dir, max_pixels=settings.preprocess.max_pixels).images
    params, arrays = fit_params_arrays(settings.scorer, seed=0, feats=engine_features(golden, settings))
    for k, v in arrays.items():
        np.testing.assert_array_equal(bundle.arrays[k], v, err_msg=k)
    np.testing.assert_allclose(ref, head_scores(params, arrays, data()[1]), rtol=1e-3,
                               atol=1e-4 * float(np.abs(ref).max()))


def test_known_anomalous_patches_are_learnt_as_such():
    """fit_with_negatives (the bench's image-space synthetic defects): patches like the given
    negatives (golden ones shifted 0.8 golden stds along every channel) score above golden ones,
    by clearly more than after training on noise alone."""
    from calibration.methods.discriminator import fit_with_negatives

    rng = np.random.default_rng(5)
    golden = rng.normal(0.0, 1.0, (20, 16, 8, 8)).astype(np.float32)
    shift = 0.8 * np.sign(rng.normal(size=16)).astype(np.float32)
    negatives = rng.normal(0.0, 1.0, (500, 16)).astype(np.float32) + shift
    config = _settings(training={"epochs": 6, "batch_size": 256, "max_patches": 4000}).scorer
    probe = (rng.normal(0.0, 1.0, (200, 16)) + shift).astype(np.float32)
    normal = rng.normal(0.0, 1.0, (200, 16)).astype(np.float32)

    def gap(state):
        params, arrays = state.params.model_dump(mode="json"), state.arrays()
        def mean_logit(p):  # patches [P, 16] as one [1, 16, P, 1] map
            return float(head_scores(params, arrays, np.ascontiguousarray(p.T.reshape(1, 16, len(p), 1))).mean())

        return mean_logit(probe) - mean_logit(normal)

    with_neg = gap(fit_with_negatives(golden, config, 0, NoProgress(), negatives))
    without = gap(fit(golden, config, 0, NoProgress()))
    assert with_neg > 0.5 and with_neg > without + 0.3, (with_neg, without)
