"""ONNX Runtime execution-provider choice and the after-the-fact check that it held.

onnxruntime does not fail when a requested provider cannot be used: an unavailable
CUDAExecutionProvider (CPU-only wheel, missing CUDA/cuDNN libraries, no GPU) only produces a
Python UserWarning and the session quietly runs on CPU. So the truth is
``session.get_providers()`` *after* the session exists, not ``get_available_providers()``.

Usage in the ONNX Runtime engine::

    providers = resolve_providers(config.providers, config.require_gpu)
    session = ort.InferenceSession(onnx_path, sess_options, providers=providers)
    check_session_providers(session, config.providers, config.require_gpu, log)
"""
from __future__ import annotations

import logging
from typing import Sequence

from engines.base import EngineError, EngineUnavailable

# Providers that mean "this should run on an accelerator"; falling back from one is news.
GPU_PROVIDERS = frozenset({
    "CUDAExecutionProvider",
    "TensorrtExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "DmlExecutionProvider",
})
CPU = "CPUExecutionProvider"
GPU_HINT = "on the GPU machine install onnxruntime-gpu (not onnxruntime) with matching CUDA and cuDNN libraries"


def resolve_providers(requested: Sequence[str], require_gpu: bool) -> list:
    """The providers list to pass to ``ort.InferenceSession``: ``requested`` in order, with
    CPUExecutionProvider appended as the last resort. Raises EngineError for a name onnxruntime
    does not know (a typo), EngineUnavailable when ``require_gpu`` and this onnxruntime build
    has no GPU provider at all. A requested but unavailable provider is kept: onnxruntime skips
    it and ``check_session_providers`` reports the fallback."""
    import onnxruntime as ort

    log = logging.getLogger(__name__)
    requested = list(requested)
    if not requested:
        raise EngineError("engine.providers is empty; list at least CPUExecutionProvider")
    known = set(ort.get_all_providers())
    unknown = [p for p in requested if p not in known]
    if unknown:
        raise EngineError(f"engine.providers: unknown onnxruntime provider(s) {unknown}; known: {sorted(known)}")
    available = ort.get_available_providers()
    if require_gpu and not [p for p in requested if p in GPU_PROVIDERS]:
        raise EngineUnavailable(f"engine.require_gpu is true but engine.providers {requested} names no GPU provider "
                                f"(one of {sorted(GPU_PROVIDERS)})")
    missing = [p for p in requested if p not in available]
    if missing:
        msg = (f"onnxruntime {ort.__version__} has no {missing} (available: {available}); {GPU_HINT}")
        if require_gpu and not [p for p in requested if p in GPU_PROVIDERS and p in available]:
            raise EngineUnavailable(f"engine.require_gpu is true: {msg}")
        log.warning("%s", msg)
    providers = requested if CPU in requested else [*requested, CPU]
    log.info("onnxruntime providers requested: %s", providers)
    return providers


def check_session_providers(session, requested: Sequence[str], require_gpu: bool, log: logging.Logger) -> list[str]:
    """Compare what the session actually runs on (``session.get_providers()``) with what was
    requested. A requested GPU provider that is not active is a WARNING, or EngineUnavailable
    when ``require_gpu``. Returns the active providers, best first."""
    import onnxruntime as ort

    active = list(session.get_providers())
    fell_back = [p for p in requested if p in GPU_PROVIDERS and p not in active]
    if fell_back:
        msg = (f"onnxruntime session fell back: requested {list(requested)}, the session runs on {active}; "
               f"{fell_back} not active (onnxruntime {ort.__version__}, available {ort.get_available_providers()}); "
               f"{GPU_HINT}")
        if require_gpu:
            raise EngineUnavailable(f"{msg}; refusing because engine.require_gpu is true")
        log.warning("%s", msg)
    else:
        log.info("onnxruntime session providers: %s", active)
    if require_gpu and not [p for p in active if p in GPU_PROVIDERS]:
        raise EngineUnavailable(f"engine.require_gpu is true but the session runs on {active} only; {GPU_HINT}")
    return active
