"""One bundle, every CPU engine: the same images get the same scores and verdicts; a bundle is
never run at another precision than it was calibrated with; batching changes nothing; the
inference worker batches what is waiting without waiting long.

All engine comparisons go through the daemon's own assembly (runtime.build_pipeline), so the
precision check, the scorer and the judge are the ones the line runs.
"""
from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from engines.onnxruntime_engine import OnnxRuntimeEngineConfig
from engines.torch_engine import TorchEngineConfig
from inspector.bundle import load_bundle
from inspector.errors import BundleError
from inspector.runtime import build_pipeline, check_precision, normalise_precision
from inspector.types import Frame

from tests.conftest import TEST_SIZE

# fp32 engines (torch, onnxruntime, OpenVINO f32) differ only in accumulation order and kernel
# choice (im2col vs direct vs Winograd convolutions). Measured on the conftest bundle (128x128,
# efficientnet_lite0, 152-d patches, image scores 19..32) with this file's 17 images: max
# |score - onnxruntime score| = 5.1e-5 (torch) and 3.8e-5 (OpenVINO f32), i.e. 2.2e-6 relative;
# max |pixel map difference| 1.1e-4 on maps peaking near 32. float32 keeps ~7 significant digits,
# and a score is a sqrt of a 152-term sum of squares fed by ~20 conv layers, so a few 1e-6
# relative is the expected noise; 1e-4 relative leaves 45x headroom for other CPUs/kernels while
# still catching any real difference (a wrong layer, a missing normalisation: >= 1e-2).
FP32_SCORE_RTOL = 1e-4
# Pixel maps: same 1e-4, relative to the map's peak (upsampling + blur mix neighbouring patches).
FP32_MAP_RTOL = 1e-4

# OpenVINO bf16 (AMX / AVX512_BF16: 8 mantissa bits, ~3.9e-3 relative per rounding) against f32
# features scored on the same fp32-calibrated memory bank. Measured on the conftest bundle with
# this file's 17 images (Xeon with AMX, OpenVINO 2026.4): max |score difference| = 0.76 on scores
# of 19..32, i.e. 3.6e-2 relative (mean ~1.5e-2): errors accumulate through ~20 layers and the
# nearest-neighbour distance magnifies them (a distance is a difference of close features).
# That is the size of the gap between a good part and a threshold, which is why a bf16 run of an
# fp32-calibrated bundle is refused; 8e-2 is about twice the measured worst case.
BF16_SCORE_RTOL = 8e-2


def _frames(images) -> list[Frame]:
    now = datetime.now(timezone.utc)
    return [Frame(id=f"f{i}", source="parity", captured_at=now, image=im) for i, im in enumerate(images)]


@pytest.fixture(scope="module")
def parts():
    """8 good parts and 3 of each defect (scratch, spot, missing hole), BGR uint8 128x128."""
    from calibration.synthetic import DEFECTS, make_part

    rng = np.random.default_rng(99)
    good = [make_part(rng, size=TEST_SIZE) for _ in range(8)]
    bad = [make_part(rng, size=TEST_SIZE, defect=d) for d in DEFECTS for _ in range(3)]
    return good + bad


@pytest.fixture(scope="module")
def bundle(fp32_bundle_dir):
    return load_bundle(fp32_bundle_dir)


def _inspect(bundle, config, frames):
    """(image scores float64 [N], verdict kinds [N], pixel maps float32 [N, H, W], precision)."""
    pipeline = build_pipeline(bundle, config)
    try:
        verdicts = pipeline.inspect(frames)
    finally:
        pipeline.engine.close()
    assert all(v.score is not None for v in verdicts), [v.error for v in verdicts]
    return (np.array([v.score for v in verdicts]), [v.kind.value for v in verdicts],
            np.stack([v.pixel_map for v in verdicts]), pipeline.engine.precision)


@pytest.fixture(scope="module")
def reference(bundle, parts):
    """onnxruntime (the default CPU engine) on the bundle: the reference for the others."""
    return _inspect(bundle, OnnxRuntimeEngineConfig(max_batch=4), _frames(parts))


def _fp32_configs():
    configs = [pytest.param(TorchEngineConfig(device="cpu", max_batch=4), id="torch")]
    try:
        from engines.openvino_engine import OpenVinoEngineConfig

        configs.append(pytest.param(OpenVinoEngineConfig(precision="fp32", max_batch=4), id="openvino-fp32"))
        configs.append(pytest.param(OpenVinoEngineConfig(precision="f32", max_batch=4), id="openvino-f32-spelling"))
    except ImportError:  # pydantic config lives in engines/, importable without openvino itself
        pass
    return configs


def test_reference_sees_both_classes(bundle, reference):
    scores, kinds, _, precision = reference
    assert precision == "fp32" == bundle.calibrated_precision
    assert kinds[:8].count("pass") >= 6 and kinds[8:].count("fail") >= 5, (scores, kinds)


@pytest.mark.parametrize("config", _fp32_configs())
def test_fp32_engines_agree_with_onnxruntime(bundle, parts, reference, config):
    if config.type == "openvino":
        pytest.importorskip("openvino")
    ref_scores, ref_kinds, ref_maps, _ = reference
    scores, kinds, maps, precision = _inspect(bundle, config, _frames(parts))
    assert precision == "fp32"
    np.testing.assert_allclose(scores, ref_scores, rtol=FP32_SCORE_RTOL, atol=0)
    np.testing.assert_allclose(maps, ref_maps, rtol=0, atol=FP32_MAP_RTOL * float(ref_maps.max()))
    # identical verdicts are only a fair demand when no score sits within the tolerance of the
    # threshold; say so rather than pass by luck
    thr = bundle.image_threshold
    assert np.abs(ref_scores - thr).min() > FP32_SCORE_RTOL * thr
    assert kinds == ref_kinds


# ---------------------------------------------------------------- bf16
@pytest.fixture(scope="module")
def bf16_config():
    pytest.importorskip("openvino")
    from engines.openvino_engine import OpenVinoEngine, OpenVinoEngineConfig

    return OpenVinoEngine, OpenVinoEngineConfig(precision="bf16", max_batch=4)


def _bf16_engine(bundle, bf16_config):
    cls, config = bf16_config
    engine = cls(bundle.engine_spec(max_batch=config.max_batch), config)
    if engine.precision != "bf16":
        engine.close()
        pytest.skip(f"this CPU runs OpenVINO bf16 requests as {engine.precision} (no AMX / AVX512_BF16)")
    return engine


def test_bf16_run_of_fp32_bundle_is_refused(bundle, bf16_config):
    engine = _bf16_engine(bundle, bf16_config)  # skips where the CPU cannot run bf16
    engine.close()
    with pytest.raises(BundleError) as err:
        build_pipeline(bundle, bf16_config[1])
    msg = str(err.value)
    assert "\n" not in msg
    assert "calibrated on onnxruntime at fp32" in msg and "runs bf16" in msg
    assert "recalibrate with this engine config" in msg


def test_bf16_scores_within_documented_tolerance(bundle, parts, reference, bf16_config):
    """bf16 features on the fp32 bank (the engine used directly: build_pipeline would refuse)."""
    ref_scores, ref_kinds, _, _ = reference
    engine = _bf16_engine(bundle, bf16_config)
    pipeline = build_pipeline(bundle, OnnxRuntimeEngineConfig(max_batch=4))
    pipeline.engine.close()
    pipeline.engine = engine
    try:
        verdicts = pipeline.inspect(_frames(parts))
    finally:
        engine.close()
    scores = np.array([v.score for v in verdicts])
    rel = np.abs(scores - ref_scores) / ref_scores
    assert rel.max() <= BF16_SCORE_RTOL, rel.max()
    assert rel.max() > 0  # really bf16: not bit-identical to f32
    # verdicts agree wherever the reference score is clear of the threshold by the tolerance
    thr = bundle.image_threshold
    clear = np.abs(ref_scores - thr) > BF16_SCORE_RTOL * thr
    assert clear.sum() >= len(parts) // 2
    assert [k for k, c in zip((v.kind.value for v in verdicts), clear) if c] == \
        [k for k, c in zip(ref_kinds, clear) if c]


def test_bf16_calibrated_bundle_runs_bf16_only(bundle_dir, parts, bf16_config):
    # the session bundle: calibrated with the default engine (openvino, precision auto, max_batch 4),
    # which is bf16 wherever the CPU has bf16
    b16 = load_bundle(bundle_dir)
    if b16.calibrated_precision != "bf16":
        pytest.skip("this CPU calibrated the default bundle at fp32")
    assert b16.manifest.engine.calibrated_engine == "openvino"
    scores, kinds, _, precision = _inspect(b16, bf16_config[1], _frames(parts[:4]))
    assert precision == "bf16" and np.isfinite(scores).all()
    with pytest.raises(BundleError, match="calibrated on openvino at bf16, but engine onnxruntime runs fp32"):
        build_pipeline(b16, OnnxRuntimeEngineConfig())


# ---------------------------------------------------------------- precision names
class _FakeEngine:
    kind = "fake"

    def __init__(self, precision):
        self.precision = precision


@pytest.mark.parametrize("engine_precision,ok", [("fp32", True), ("f32", True), ("FP32", True), ("float32", True),
                                                  ("bf16", False), ("fp16", False)])
def test_check_precision_normalises_names(bundle, engine_precision, ok):
    if ok:
        check_precision(bundle, _FakeEngine(engine_precision))
    else:
        with pytest.raises(BundleError, match=f"runs {engine_precision}: thresholds do not carry across"):
            check_precision(bundle, _FakeEngine(engine_precision))


def test_normalise_precision():
    assert [normalise_precision(p) for p in ("f32", "fp32", "bfloat16", "f16", "int8")] == \
        ["fp32", "fp32", "bf16", "fp16", "int8"]


# ---------------------------------------------------------------- batching
def test_batch_of_four_equals_four_single_calls(bundle, parts):
    pipeline = build_pipeline(bundle, OnnxRuntimeEngineConfig(max_batch=4))
    try:
        frames = _frames([parts[0], parts[8], parts[11], parts[14]])  # good, scratch, spot, missing hole
        whole = pipeline.inspect(frames)
        singles = [pipeline.inspect([f])[0] for f in frames]
    finally:
        pipeline.engine.close()
    assert [v.frame.id for v in whole] == [f.id for f in frames]
    for w, s in zip(whole, singles):
        assert w.kind == s.kind
        np.testing.assert_allclose(w.score, s.score, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(w.pixel_map, s.pixel_map, rtol=1e-4, atol=1e-4)


def test_without_pass_maps_only_fails_get_a_map_and_the_same_regions(bundle, parts):
    # the daemon makes pixel maps only for what it draws or cuts into regions (fails, unless
    # heatmaps for passes are configured): scores, verdicts and fail maps must not change
    pipeline = build_pipeline(bundle, OnnxRuntimeEngineConfig(max_batch=4))
    try:
        frames = _frames(parts)
        full = pipeline.inspect(frames)
        pipeline.maps_for_passes = False
        lean = pipeline.inspect(frames)
    finally:
        pipeline.engine.close()
    kinds = [v.kind.value for v in full]
    assert "pass" in kinds and "fail" in kinds, kinds
    assert [v.kind for v in lean] == [v.kind for v in full]
    for f, v in zip(full, lean):
        assert v.score == f.score and f.pixel_map is not None
        if v.kind.value == "fail":
            np.testing.assert_array_equal(v.pixel_map, f.pixel_map)
            assert v.regions == f.regions and v.regions
        else:
            assert v.pixel_map is None


# ---------------------------------------------------------------- the inference worker's batching
def _service(max_batch=4, batch_wait_ms=50.0):
    from inspector.service import InspectionService

    # take_batch touches only the frame queue and the batch settings
    return InspectionService(pipeline=None, store=None, sources=(), layout=None, max_batch=max_batch,
                             batch_wait_ms=batch_wait_ms, queue_size=16)


def _fill(service, n):
    for f in _frames([None] * n):
        service.frames.put_nowait(f)


def test_take_batch_takes_what_is_waiting():
    svc = _service(max_batch=4, batch_wait_ms=50.0)
    _fill(svc, 3)
    t0 = time.monotonic()
    batch = svc.engine_stage.take_batch()
    waited = time.monotonic() - t0
    assert [f.id for f in batch] == ["f0", "f1", "f2"]
    # a 4th frame never came: it waited for it at most batch_wait_ms (plus scheduling slack)
    assert waited < 0.05 + 0.15, waited
    assert svc.frames.empty()


def test_take_batch_splits_at_max_batch():
    svc = _service(max_batch=4, batch_wait_ms=1000.0)
    _fill(svc, 6)
    t0 = time.monotonic()
    first = svc.engine_stage.take_batch()
    full_in = time.monotonic() - t0
    second = svc.engine_stage.take_batch()
    assert [f.id for f in first] == ["f0", "f1", "f2", "f3"]
    assert [f.id for f in second] == ["f4", "f5"]
    assert full_in < 0.2, "a full batch must go at once, not wait out batch_wait_ms"


def test_take_batch_on_empty_queue_returns_quickly():
    svc = _service(max_batch=4, batch_wait_ms=5000.0)
    t0 = time.monotonic()
    assert svc.engine_stage.take_batch() == []
    assert time.monotonic() - t0 < 0.2 + 0.15


def test_take_batch_includes_a_frame_arriving_within_the_wait():
    svc = _service(max_batch=4, batch_wait_ms=300.0)
    _fill(svc, 1)
    late = _frames([None])[0]
    timer = threading.Timer(0.05, lambda: svc.frames.put_nowait(late))
    timer.start()
    try:
        t0 = time.monotonic()
        batch = svc.engine_stage.take_batch()
        waited = time.monotonic() - t0
    finally:
        timer.cancel()
    assert len(batch) == 2
    assert waited < 0.3 + 0.15
    with pytest.raises(queue.Empty):
        svc.frames.get_nowait()


def test_search_precision_follows_the_engine(bundle_dir, fp32_bundle_dir):
    """The memory bank searches at the engine's precision, at calibration and on the line alike."""
    from inspector.settings import Settings

    bundle = load_bundle(bundle_dir)
    default = build_pipeline(bundle, Settings().engine)
    try:
        want = "bf16" if default.engine.precision == "bf16" else "fp32"
        assert bundle.scorer_params["search"] == want  # recorded at calibration
        assert default.scorer.state.searcher.name == want
    finally:
        default.engine.close()
    fp32_bundle = load_bundle(fp32_bundle_dir)
    assert fp32_bundle.scorer_params["search"] == "fp32"
    # the default engine (openvino, precision auto) runs an fp32 bundle at fp32 on any CPU
    fp32 = build_pipeline(fp32_bundle, Settings().engine)
    try:
        assert fp32.engine.kind == "openvino" and fp32.engine.precision == "fp32"
        assert fp32.scorer.state.searcher.name == "fp32"
    finally:
        fp32.engine.close()


def test_auto_refuses_a_bf16_bundle_on_a_cpu_without_bf16(bundle_dir, monkeypatch):
    import engines.openvino_engine as ov_engine
    from inspector.settings import Settings

    bundle = load_bundle(bundle_dir)
    if bundle.calibrated_precision != "bf16":
        pytest.skip("this CPU calibrated the default bundle at fp32")
    monkeypatch.setattr(ov_engine, "default_precision", lambda: "fp32")  # a line PC without AMX/AVX512_BF16
    with pytest.raises(BundleError, match="calibrated at bf16 and this CPU has no bf16 support; recalibrate"):
        build_pipeline(bundle, Settings().engine)
