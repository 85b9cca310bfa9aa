"""Feature flow (flow / flow): shapes, batch == one-by-one, the log-determinant against a
brute-force Jacobian, maximum-likelihood training lowers the golden NLL and keeps shifted
features unlikely, a planted defect flagged at its place, determinism, and the same output from
every engine (onnxruntime, OpenVINO, torch) on a calibrated bundle."""
import functools

import numpy as np
import pytest
import torch

from calibration.methods.flow import random_rotations, whitening
from engines.backbones.flow import AffineCoupling, FeatureFlow
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings
from tests.unit._scorer_data import data, fit_params_arrays, head_scores, peak_is_at_defect, preprocess, scorer_of

TRAIN = {"epochs": 25, "batch_size": 4, "lr": 0.003, "patience": 6}
FLOW = {"channels": 16, "blocks": 4, "hidden": 16}


def _settings(epochs=TRAIN["epochs"], **flow):
    return small_settings(scorer={"type": "flow", "flow": {**FLOW, **flow, "training": {**TRAIN, "epochs": epochs}}},
                          engine=FP32_ENGINE)


@functools.lru_cache(maxsize=1)
def _fit():
    """(params, arrays) fitted on the golden features, once per process."""
    return fit_params_arrays(_settings().scorer, seed=0, feats=data()[0])


def _random_flow(in_dim=6, channels=6, blocks=3, hidden=5, seed=0) -> FeatureFlow:
    """A flow whose couplings are not the identity (random last layers) and whose mixings rotate."""
    torch.manual_seed(seed)
    flow = FeatureFlow(in_dim, channels, blocks, hidden, clamp=2.0).double()
    for c in flow.couplings:
        torch.nn.init.normal_(c.subnet[-1].weight, std=0.3)
        torch.nn.init.normal_(c.subnet[-1].bias, std=0.3)
    q, _ = torch.linalg.qr(torch.randn(blocks, channels, channels, dtype=torch.float64))  # exactly orthogonal in fp64
    flow.mixing.copy_(q)
    return flow.eval()


def test_output_is_one_nll_per_position():
    params, arrays = _fit()
    feats = data()[1]
    out = head_scores(params, arrays, feats)
    assert out.shape == (len(feats), 1, *feats.shape[2:]) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert params["head"]["kind"] == "flow" and params["head"]["channels"] == 16
    assert 0 < params["explained_variance"] <= 1


def test_log_det_equals_the_brute_force_jacobian():
    # 3x3 couplings mix neighbours, so the Jacobian is over the whole map (C*h*w square); it is
    # triangular by blocks, and its log|det| is the sum of the per-position log-dets the flow reports
    flow = _random_flow()
    x = torch.randn(1, 6, 3, 2, dtype=torch.float64)
    with torch.no_grad():
        z, logdet = flow.transform(x)
    jac = torch.autograd.functional.jacobian(lambda v: flow.transform(v.view_as(x))[0].flatten(), x.flatten())
    sign, brute = torch.linalg.slogdet(jac)
    assert sign != 0 and abs(float(brute)) > 0.1  # really not volume-preserving
    assert float(logdet.sum()) == pytest.approx(float(brute), rel=1e-9, abs=1e-9)


def test_coupling_inverts_and_flow_nll_is_a_density():
    # the couplings are invertible (x2 = (y2 - t) * exp(-s)) and the output is the per-channel NLL:
    # 0.5 ||z||^2 - log|det| over C
    flow = _random_flow(channels=4, in_dim=4)
    c: AffineCoupling = flow.couplings[0]
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    y, _ = c(x)
    st = c.subnet(y[:, :c.split])
    s = c.clamp * torch.tanh(st[:, :c.rest] / c.clamp)
    torch.testing.assert_close(torch.cat([y[:, :c.split], (y[:, c.split:] - st[:, c.rest:]) * torch.exp(-s)], 1), x)
    z, logdet = flow.transform(x)
    torch.testing.assert_close(flow(x), (0.5 * (z * z).sum(1, keepdim=True) - logdet) / 4)


def test_whitening_projection_makes_unit_covariance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5000, 8)) @ rng.standard_normal((8, 8)) * np.arange(1, 9)
    x = (x - x.mean(0)).astype(np.float32)
    p, kept = whitening(x, 5)
    z = x @ p.T
    np.testing.assert_allclose(np.cov(z.T), np.eye(5), atol=2e-3)
    assert 0.5 < kept < 1.0
    q = random_rotations(3, 6, seed=1)
    np.testing.assert_allclose(q[1] @ q[1].T, np.eye(6), atol=1e-5)


def test_training_lowers_the_golden_nll_and_shifted_features_stay_unlikely():
    golden, test = data()[0], data()[1][:6]  # 6 new good parts
    # lr ~0: the flow as fitted before training (whitening + identity couplings)
    untrained = fit_params_arrays(small_settings(scorer={"type": "flow", "flow": {
        **FLOW, "training": {**TRAIN, "epochs": 1, "lr": 1e-9}}}, engine=FP32_ENGINE).scorer, seed=0, feats=golden)
    params, arrays = _fit()
    before = head_scores(*untrained, test).mean()
    after = head_scores(params, arrays, test).mean()
    assert after < before - 0.1, (before, after)
    assert params["training"]["best_val_loss"] < params["training"]["train_loss"] + 1.0
    # the same parts with their features moved off the golden distribution
    std = golden.std(axis=(0, 2, 3), keepdims=True)
    shifted = head_scores(params, arrays, (test + 2.0 * std).astype(np.float32)).mean()
    assert shifted > after + 1.0, (after, shifted)


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
    np.testing.assert_allclose(one, whole, rtol=1e-4, atol=1e-5)
    scorer = scorer_of(params, arrays)
    sm = scorer.score({"patch_scores": whole}, (TEST_SIZE, TEST_SIZE))
    for i in range(len(test)):
        s1 = scorer.score({"patch_scores": whole[i:i + 1]}, (TEST_SIZE, TEST_SIZE))
        np.testing.assert_allclose(s1.image_scores[0], sm.image_scores[i], rtol=1e-6)


def test_seeded_fit_is_deterministic_and_the_seed_matters():
    s = _settings(epochs=2)
    a = fit_params_arrays(s.scorer, seed=2, feats=data()[0][:6])[1]
    b = fit_params_arrays(s.scorer, seed=2, feats=data()[0][:6])[1]
    c = fit_params_arrays(s.scorer, seed=3, feats=data()[0][:6])[1]
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["head.mixing"], c["head.mixing"])


def test_channels_are_capped_at_the_feature_dimension():
    feats = data()[0][:4, :8]  # 8 channels only
    params, arrays = fit_params_arrays(_settings(epochs=1, channels=64).scorer, seed=0, feats=feats)
    assert params["head"]["channels"] == 8 and arrays["head.projection"].shape == (8, 8)


def test_config_refuses_bad_values():
    from inspector.errors import ConfigError

    with pytest.raises(ConfigError, match="scorer.flow.blocks"):
        small_settings(scorer={"type": "flow", "flow": {"blocks": 0}})
    with pytest.raises(ConfigError, match="scorer.flow"):
        small_settings(scorer={"type": "flow", "flow": {"coupling": "glow"}})
    assert small_settings(scorer={"type": "flow"}).scorer.method == "flow"


def test_the_shipped_flow_config_validates():
    from pathlib import Path

    from inspector.settings import load_settings

    s = load_settings(Path(__file__).resolve().parents[2] / "config" / "scorers" / "flow.yaml")
    assert (s.scorer.type, s.scorer.method, s.scorer.flow.channels, s.scorer.flow.blocks) == ("flow", "flow", 64, 4)


# ---------------------------------------------------------------- engines
@pytest.fixture(scope="module")
def flow_bundle(tmp_path_factory, golden_dir):
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("flow") / "bundle"
    calibrate(_settings(epochs=10), golden_dir, out, progress=False)
    return out


def _engine_configs():
    from engines.onnxruntime_engine import OnnxRuntimeEngineConfig
    from engines.openvino_engine import OpenVinoEngineConfig
    from engines.torch_engine import TorchEngineConfig

    return {"onnxruntime": OnnxRuntimeEngineConfig(max_batch=4), "torch": TorchEngineConfig(device="cpu", max_batch=4),
            "openvino": OpenVinoEngineConfig(precision="fp32", max_batch=4)}


def test_engines_run_the_flow_head_alike(flow_bundle):
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline

    pytest.importorskip("openvino")
    bundle = load_bundle(flow_bundle)
    assert bundle.manifest.network.as_dict()["head"]["kind"] == "flow"
    x = preprocess(data()[2])
    outs = {}
    for name, config in _engine_configs().items():
        pipeline = build_pipeline(bundle, config)
        try:
            outs[name] = pipeline.engine.run(x)["patch_scores"]
        finally:
            pipeline.engine.close()
    ref = outs["onnxruntime"]
    assert ref.shape == (len(x), 1, TEST_SIZE // 8, TEST_SIZE // 8)
    # fp32 engines differ in accumulation order (test_engine_parity.py); the flow's exp() of
    # coupling scales keeps relative differences at the 1e-5 level, 1e-3 of the map's range is ample
    for name in ("torch", "openvino"):
        np.testing.assert_allclose(outs[name], ref, rtol=0, atol=1e-3 * float(np.abs(ref).max()), err_msg=name)


def test_calibrate_auto_compares_the_flow_only_when_configured():
    # a flow fit takes minutes (docs/BENCHMARKS.md, issue 13), so --auto does not add it on its own
    from calibration.auto import candidates

    assert "flow" not in [c.settings.scorer.method for c in candidates(small_settings())]
    assert [c.settings.scorer.method for c in candidates(small_settings(scorer={"type": "flow"}))] == ["flow"]
