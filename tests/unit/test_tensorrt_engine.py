"""TensorRTEngine build / plan cache / binding logic, against the in-test TensorRT + pycuda
stand-in (tests/unit/_trt_fakes.py), which executes the ONNX with onnxruntime on what our code
copied into 'device' memory. The real TensorRT path is tests/gpu/test_tensorrt_real.py."""
from __future__ import annotations

import json
import logging
import sys

import numpy as np
import pytest

from tests.unit._engine_fixtures import OUTPUT_NAMES, export_tiny_onnx, ort_reference, random_batch, tiny_spec
from tests.unit._trt_fakes import FakeGpu, install
from engines.base import Engine, EngineError, EngineUnavailable
from engines.tensorrt_engine import TensorRTEngine, TensorRTEngineConfig


@pytest.fixture
def gpu(monkeypatch):
    return install(monkeypatch, FakeGpu())


@pytest.fixture
def onnx_path(tmp_path):
    return export_tiny_onnx(tmp_path / "backbone.onnx")


def make(onnx_path, **cfg):
    return TensorRTEngine(tiny_spec(onnx_path), TensorRTEngineConfig(**cfg))


# ---------------------------------------------------------------- availability
def test_missing_tensorrt_raises_engine_unavailable_with_install_line(monkeypatch, onnx_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    with pytest.raises(EngineUnavailable) as err:
        make(onnx_path)
    msg = str(err.value)
    assert "TensorRT 10 and pycuda" in msg and "inspector[tensorrt]" in msg and "https://pypi.nvidia.com" in msg


def test_missing_pycuda_raises_engine_unavailable(monkeypatch, gpu, onnx_path):
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(EngineUnavailable, match="inspector\\[tensorrt\\]"):
        make(onnx_path)


def test_other_tensorrt_major_is_refused(monkeypatch, onnx_path):
    install(monkeypatch, FakeGpu(trt_version="11.0.0"))
    with pytest.raises(EngineUnavailable, match="found TensorRT 11.0.0"):
        make(onnx_path)


def test_missing_cuda_device_is_engine_unavailable(gpu, onnx_path):
    with pytest.raises(EngineUnavailable, match="no usable CUDA device 3"):
        make(onnx_path, device=3)


# ---------------------------------------------------------------- build
def test_fp16_flag_set_when_platform_has_fast_fp16(gpu, onnx_path, caplog):
    caplog.set_level(logging.INFO)
    eng = make(onnx_path, workspace_mb=256)
    (build,) = gpu.builds
    assert build["flags"] == {"FP16"}
    assert build["network_flags"] == 0  # explicit batch is implicit in TensorRT 10
    assert build["pools"] == {"WORKSPACE": 256 << 20}
    assert eng.precision == "fp16" and eng.kind == "tensorrt"
    assert "platform_has_fast_fp16 is True" in caplog.text
    assert isinstance(eng, Engine)


def test_fp32_fallback_without_fast_fp16_is_logged(monkeypatch, onnx_path, caplog):
    gpu = install(monkeypatch, FakeGpu(fast_fp16=False))
    caplog.set_level(logging.INFO)
    eng = make(onnx_path)
    assert gpu.builds[0]["flags"] == set()
    assert eng.precision == "fp32"
    assert any(r.levelno == logging.WARNING and "platform_has_fast_fp16 is False" in r.getMessage() for r in caplog.records)


def test_fp32_configured_sets_no_fp16_flag(gpu, onnx_path):
    eng = make(onnx_path, precision="fp32")
    assert gpu.builds[0]["flags"] == set() and eng.precision == "fp32"


def test_profile_is_batch_1_to_max(gpu, onnx_path):
    make(onnx_path, max_batch=6)
    assert gpu.builds[0]["profile"] == {"images": [[1, 3, 32, 32], [6, 3, 32, 32], [6, 3, 32, 32]]}


def test_timing_cache_written_and_reused(gpu, onnx_path, tmp_path):
    make(onnx_path)
    timing = onnx_path.parent / "engine-cache" / "timing.cache"
    assert timing.exists() and timing.stat().st_size > 0
    assert gpu.builds[0]["timing_cache_hit"] is False
    for p in (onnx_path.parent / "engine-cache").glob("backbone.plan*"):
        p.unlink()  # force a rebuild: the timing cache must be loaded and hit
    make(onnx_path)
    assert len(gpu.builds) == 2 and gpu.builds[1]["timing_cache_hit"] is True


def test_timing_cache_path_from_config(gpu, onnx_path, tmp_path):
    custom = tmp_path / "caches" / "my.timing"
    make(onnx_path, timing_cache=custom)
    assert custom.exists()


# ---------------------------------------------------------------- plan cache
def test_plan_cache_hit_on_second_build(gpu, onnx_path, caplog):
    caplog.set_level(logging.INFO)
    make(onnx_path).close()
    eng = make(onnx_path)
    assert len(gpu.builds) == 1
    assert "plan cache hit" in caplog.text
    side = json.loads((onnx_path.parent / "engine-cache" / "backbone.plan.json").read_text())
    assert side["key"]["gpu_name"] == gpu.gpu_name and side["key"]["compute_capability"] == "8.6"
    assert side["key"]["precision"] == "fp16" and side["effective_precision"] == "fp16"
    assert side["key"]["profile"] == "1x3x32x32/4x3x32x32/4x3x32x32"
    assert eng.precision == "fp16"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"trt_version": "10.4.0"}, "tensorrt_version 10.3.0 -> 10.4.0"),
        ({"gpu_name": "NVIDIA L4", "compute_capability": (8, 9)}, "gpu_name NVIDIA RTX A2000 -> NVIDIA L4"),
    ],
)
def test_rebuild_when_tensorrt_or_gpu_changes(monkeypatch, onnx_path, caplog, change, expected):
    install(monkeypatch, FakeGpu())
    make(onnx_path).close()
    gpu2 = install(monkeypatch, FakeGpu(**change))
    caplog.set_level(logging.INFO)
    make(onnx_path)
    assert len(gpu2.builds) == 1
    assert "cached plan is stale: " in caplog.text and expected in caplog.text
    if "compute_capability" in change:
        assert "compute_capability 8.6 -> 8.9" in caplog.text


def test_rebuild_when_precision_or_batch_changes(gpu, onnx_path, caplog):
    make(onnx_path).close()
    caplog.set_level(logging.INFO)
    make(onnx_path, precision="fp32").close()
    assert "precision fp16 -> fp32" in caplog.text
    make(onnx_path, precision="fp32", max_batch=2)
    assert "profile 1x3x32x32/4x3x32x32/4x3x32x32 -> 1x3x32x32/2x3x32x32/2x3x32x32" in caplog.text
    assert len(gpu.builds) == 3


def test_rebuild_when_onnx_changes(gpu, onnx_path, caplog):
    make(onnx_path).close()
    import onnx

    model = onnx.load(str(onnx_path))
    model.doc_string = "recalibrated"  # a new export: same graph, different bytes
    onnx.save(model, str(onnx_path))
    caplog.set_level(logging.INFO)
    make(onnx_path)
    assert len(gpu.builds) == 2 and "onnx_sha256" in caplog.text


def test_corrupt_plan_is_rebuilt(gpu, onnx_path, caplog):
    make(onnx_path).close()
    plan = onnx_path.parent / "engine-cache" / "backbone.plan"
    plan.write_bytes(plan.read_bytes()[:10])
    caplog.set_level(logging.INFO)
    eng = make(onnx_path)
    assert len(gpu.builds) == 2 and "does not match its recorded sha256" in caplog.text
    eng.run(random_batch(1))


def test_cached_plan_that_does_not_deserialize_is_rebuilt(gpu, onnx_path, caplog):
    make(onnx_path).close()
    gpu.refuse_deserialize = 1
    caplog.set_level(logging.INFO)
    eng = make(onnx_path)
    assert len(gpu.builds) == 2 and eng.plan_status == "built"
    assert "did not deserialize" in caplog.text
    assert gpu.context_depth == 0


def test_failed_build_pops_the_cuda_context(gpu, onnx_path):
    gpu.refuse_deserialize = 5
    with pytest.raises(EngineError, match="could not deserialize the plan it just built"):
        make(onnx_path)
    assert gpu.context_depth == 0


# ---------------------------------------------------------------- run / buffers
@pytest.mark.parametrize("precision, atol", [("fp32", 1e-6), ("fp16", 2e-2)])
def test_batch_1_and_3_outputs_equal_onnxruntime(gpu, onnx_path, precision, atol):
    eng = make(onnx_path, precision=precision, max_batch=4)
    for n in (1, 3):
        x = random_batch(n, seed=n)
        got, want = eng.run(x), ort_reference(onnx_path, x)
        assert set(got) == set(OUTPUT_NAMES)
        for k in OUTPUT_NAMES:
            assert got[k].shape == want[k].shape and got[k].dtype == np.float32
            np.testing.assert_allclose(got[k], want[k], atol=atol, rtol=atol)


def test_buffers_allocated_once_and_reused(gpu, onnx_path):
    eng = make(onnx_path, max_batch=4)
    assert len(gpu.pagelocked) == 3 and len(gpu.mem_allocs) == 3  # 1 input + 2 outputs, sized for batch 4
    assert gpu.mem_allocs[0] == 4 * 3 * 32 * 32 * 4
    outs = [eng.run(random_batch(n, seed=n)) for n in (1, 3, 4, 2, 1)]
    assert len(gpu.pagelocked) == 3 and len(gpu.mem_allocs) == 3
    assert [s[0] for s in gpu.executions] == [1, 3, 4, 2, 1]
    assert gpu.htod == [n * 3 * 32 * 32 * 4 for n in (1, 3, 4, 2, 1)]  # only the live rows are copied
    # returned arrays are copies, not views of the reused page-locked buffers
    np.testing.assert_array_equal(outs[0]["features"], eng.run(random_batch(1, seed=1))["features"])
    assert gpu.context_depth == 0  # every push was popped


def test_larger_batch_is_split(gpu, onnx_path):
    eng = make(onnx_path, precision="fp32", max_batch=4)
    x = random_batch(6)
    got, want = eng.run(x), ort_reference(onnx_path, x)
    assert [s[0] for s in gpu.executions] == [4, 2]
    for k in OUTPUT_NAMES:
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)
    assert eng.spec.max_batch == 4


def test_wrong_input_shape_is_refused(gpu, onnx_path):
    eng = make(onnx_path)
    with pytest.raises(EngineError, match="expected float32 \\[N, 3, 32, 32\\]"):
        eng.run(np.zeros((1, 3, 16, 16), np.float32))


def test_warmup_and_close_free_device_memory(gpu, onnx_path):
    eng = make(onnx_path)
    eng.warmup()
    assert gpu.memory
    eng.close()
    eng.close()  # idempotent
    assert not gpu.memory and gpu.context_depth == 0
    with pytest.raises(EngineError, match="closed"):
        eng.run(random_batch(1))
