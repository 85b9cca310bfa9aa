"""OpenVinoEngine on this CPU, compared with onnxruntime on the same ONNX."""
from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from tests.unit._engine_fixtures import OUTPUT_NAMES, export_tiny_onnx, ort_reference, random_batch, tiny_spec
from engines.base import Engine, EngineError, EngineUnavailable
from engines.openvino_engine import OpenVinoEngine, OpenVinoEngineConfig, default_precision, resolve_precision

# bf16 tolerance, relative to the largest |reference| value of each output. Measured on this
# machine (Xeon with AMX/AVX512_BF16, OpenVINO 2026.4, the tiny two-conv net, 20 seeds x batches
# 1/3/4/6): max |ov_bf16 - ort_f32| = 7.2e-3, i.e. 5.3e-3 of max|ref| (bf16 keeps 8 mantissa
# bits: ~3.9e-3 relative per rounding). 2e-2 leaves room for other CPUs; deeper networks
# accumulate more, so measure the real backbone before calibrating with bf16.
BF16_REL_TOL = 2e-2


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    pytest.importorskip("openvino")
    return export_tiny_onnx(tmp_path_factory.mktemp("ov") / "backbone.onnx")


def make(onnx_path, **cfg):
    return OpenVinoEngine(tiny_spec(onnx_path), OpenVinoEngineConfig(threads=2, **cfg))


@pytest.mark.parametrize("n", [1, 3, 4, 6])
def test_f32_equals_onnxruntime(onnx_path, n):
    eng = make(onnx_path, precision="f32", max_batch=4)
    assert isinstance(eng, Engine) and eng.kind == "openvino" and eng.precision == "fp32"
    x = random_batch(n, seed=n)
    got, want = eng.run(x), ort_reference(onnx_path, x)
    for k in OUTPUT_NAMES:
        assert got[k].shape == want[k].shape and got[k].dtype == np.float32
        np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=1e-4)


def test_bf16_within_documented_tolerance(onnx_path):
    eng = make(onnx_path, precision="bf16")
    x = random_batch(3, seed=7)
    got, want = eng.run(x), ort_reference(onnx_path, x)
    for k in OUTPUT_NAMES:
        err = np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()
        assert err <= BF16_REL_TOL, (k, err)
    if eng.precision == "bf16":  # the CPU really runs bf16: results must differ from f32 a little
        assert any(np.abs(got[k] - want[k]).max() > 0 for k in OUTPUT_NAMES)


def test_precision_is_explicit_and_logged(onnx_path, caplog):
    caplog.set_level(logging.INFO)
    make(onnx_path, precision="f32")
    assert "precision fp32 (requested f32)" in caplog.text


def test_outputs_are_copies(onnx_path):
    eng = make(onnx_path)
    a = eng.run(random_batch(1, seed=1))
    b = eng.run(random_batch(1, seed=2))
    assert not np.array_equal(a["features"], b["features"])


def test_bad_shape_and_closed(onnx_path):
    eng = make(onnx_path)
    eng.warmup()
    with pytest.raises(EngineError, match="expected float32"):
        eng.run(np.zeros((1, 3, 8, 8), np.float32))
    eng.close()
    with pytest.raises(EngineError, match="closed"):
        eng.run(random_batch(1))


def test_missing_openvino_is_engine_unavailable(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)
    spec = tiny_spec(tmp_path / "absent.onnx")
    with pytest.raises(EngineUnavailable, match="pip install openvino"):
        OpenVinoEngine(spec, OpenVinoEngineConfig())


@pytest.mark.parametrize("requested,caps,want", [
    ("auto", ["FP32", "BF16", "INT8"], "bf16"),
    ("auto", ["FP32", "FP16", "INT8"], "fp32"),
    ("fp32", ["FP32", "BF16"], "fp32"),
    ("bf16", ["FP32"], "bf16"),  # explicit bf16 is honoured (with a warning) even without hardware support
])
def test_resolve_precision(requested, caps, want):
    assert resolve_precision(requested, caps) == want


def test_auto_is_the_default_and_runs_what_this_cpu_supports(onnx_path):
    assert OpenVinoEngineConfig().precision == "auto"
    eng = make(onnx_path)
    assert eng.precision == default_precision()
    out = eng.run(random_batch(2))
    ref = ort_reference(onnx_path, random_batch(2))
    for name in OUTPUT_NAMES:
        scale = float(np.abs(ref[name]).max())
        np.testing.assert_allclose(out[name], ref[name], atol=BF16_REL_TOL * scale)
    eng.close()


def test_no_bf16_switch_makes_a_bf16_cpu_run_fp32(onnx_path, monkeypatch):
    """INSPECTOR_CPU_NO_BF16: a CPU with bf16 behaves as one without (CI's second pass tests the fp32
    path with it on bf16 machines): auto resolves to fp32, and a bf16 request runs fp32."""
    import engines.openvino_engine as ov_engine

    monkeypatch.setattr(ov_engine, "_openvino_capabilities", lambda: ("FP32", "BF16", "INT8"))  # a bf16 CPU
    monkeypatch.delenv(ov_engine.NO_BF16_ENV, raising=False)
    assert default_precision() == "bf16"
    monkeypatch.setenv(ov_engine.NO_BF16_ENV, "1")
    assert ov_engine.cpu_capabilities() == ("FP32", "INT8")
    assert default_precision() == "fp32"
    eng = make(onnx_path, precision="bf16", max_batch=4)
    assert eng.precision == "fp32"
    x = random_batch(3, seed=5)
    got, want = eng.run(x), ort_reference(onnx_path, x)
    for k in OUTPUT_NAMES:  # really fp32: ONNX Runtime's fp32 results
        np.testing.assert_allclose(got[k], want[k], atol=1e-4, rtol=1e-4)
    eng.close()
    monkeypatch.setenv(ov_engine.NO_BF16_ENV, "0")  # "0" (or empty) is off
    assert default_precision() == "bf16"
