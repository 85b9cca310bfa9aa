"""Provider fallback detection with real onnxruntime sessions on this CPU-only wheel."""
from __future__ import annotations

import logging
import warnings

import onnxruntime as ort
import pytest

from tests.unit._engine_fixtures import export_tiny_onnx
from engines.base import EngineError, EngineUnavailable
from engines.ort_providers import check_session_providers, resolve_providers

pytestmark = pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                                reason="this onnxruntime has CUDA; the fallback cannot be provoked")

LOG = logging.getLogger("test.ort")


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return export_tiny_onnx(tmp_path_factory.mktemp("ort") / "backbone.onnx")


def session(onnx_path, providers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnxruntime's own "not in available provider names"
        return ort.InferenceSession(str(onnx_path), providers=providers)


def test_cpu_only_is_quiet(onnx_path, caplog):
    caplog.set_level(logging.INFO)
    providers = resolve_providers(["CPUExecutionProvider"], require_gpu=False)
    assert providers == ["CPUExecutionProvider"]
    active = check_session_providers(session(onnx_path, providers), providers, False, LOG)
    assert active == ["CPUExecutionProvider"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cuda_requested_on_cpu_wheel_warns_after_session(onnx_path, caplog):
    caplog.set_level(logging.INFO)
    requested = ["CUDAExecutionProvider"]
    providers = resolve_providers(requested, require_gpu=False)
    assert providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = session(onnx_path, providers)
    caplog.clear()
    active = check_session_providers(sess, requested, False, LOG)
    assert active == ["CPUExecutionProvider"]  # the session quietly runs on CPU...
    warnings_ = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_) == 1  # ...and we say so
    assert "fell back" in warnings_[0] and "CUDAExecutionProvider" in warnings_[0] and "onnxruntime-gpu" in warnings_[0]


def test_cuda_required_on_cpu_wheel_is_refused_after_session(onnx_path):
    requested = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    sess = session(onnx_path, requested)  # created anyway, as onnxruntime does
    with pytest.raises(EngineUnavailable, match="refusing because engine.require_gpu is true"):
        check_session_providers(sess, requested, True, LOG)


def test_tensorrt_ep_fallback_is_detected(onnx_path, caplog):
    requested = ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    sess = session(onnx_path, requested + ["CPUExecutionProvider"])
    check_session_providers(sess, requested, False, LOG)
    assert "['TensorrtExecutionProvider', 'CUDAExecutionProvider'] not active" in caplog.text


def test_resolve_refuses_early_when_gpu_required_but_unavailable():
    with pytest.raises(EngineUnavailable, match="require_gpu is true"):
        resolve_providers(["CUDAExecutionProvider"], require_gpu=True)


def test_resolve_refuses_gpu_required_with_cpu_only_list():
    with pytest.raises(EngineUnavailable, match="names no GPU provider"):
        resolve_providers(["CPUExecutionProvider"], require_gpu=True)


def test_unknown_provider_name_is_an_error():
    with pytest.raises(EngineError, match="unknown onnxruntime provider"):
        resolve_providers(["CUDAExecutonProvider"], require_gpu=False)
