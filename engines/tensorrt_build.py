"""Build a TensorRT 10 plan (serialized engine) from an ONNX file.

Called with the already-imported ``tensorrt`` module (``trt``) so this module itself imports
nothing heavy. The network has one float32 NCHW input whose batch dimension is dynamic; the
plan gets one optimisation profile: min batch 1, opt = max = max_batch.

TensorRT 10 facts this relies on (Python API):
- networks are always explicit-batch; ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` is
  deprecated and ignored, so ``create_network(0)``;
- ``IBuilderConfig.set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes)`` replaces
  ``max_workspace_size``;
- ``builder.platform_has_fast_fp16`` is deprecated since 10.5 and weak typing
  (``BuilderFlag.FP16``) since 10.12; both still work in 10.x and are gone in 11.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from engines.base import EngineError
from engines.atomicfile import atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildResult:
    plan: bytes
    effective_precision: str  # "fp16" or "fp32"
    seconds: float


def make_trt_logger(trt):
    """A trt.ILogger that forwards TensorRT's messages to Python logging (errors and warnings
    as such, INFO as DEBUG, VERBOSE dropped)."""
    sev = trt.ILogger.Severity
    trt_log = logging.getLogger("engines.tensorrt.trt")

    class _PythonLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if severity in (sev.INTERNAL_ERROR, sev.ERROR):
                trt_log.error("%s", msg)
            elif severity == sev.WARNING:
                trt_log.warning("%s", msg)
            elif severity == sev.INFO:
                trt_log.debug("%s", msg)

    return _PythonLogger()


def choose_precision(requested: str, fast_fp16: Optional[bool]) -> tuple[str, str]:
    """(effective precision, why). fast_fp16 None: the builder no longer reports it (every GPU
    TensorRT 10 supports has fast FP16), so FP16 stays on."""
    if requested == "fp32":
        return "fp32", "precision fp32 configured"
    if fast_fp16 is False:
        return "fp32", "precision fp16 requested but builder.platform_has_fast_fp16 is False on this GPU: building FP32"
    if fast_fp16 is None:
        return "fp16", "precision fp16 (builder does not report platform_has_fast_fp16; assuming fast FP16)"
    return "fp16", "precision fp16: builder.platform_has_fast_fp16 is True"


def build_plan(
    trt,
    onnx_path: Path,
    input_name: str,
    input_shape: tuple[int, int, int],
    max_batch: int,
    precision: str,
    workspace_mb: int,
    timing_cache_path: Path,
    trt_logger=None,
) -> BuildResult:
    """Parse ``onnx_path`` and build a serialized plan for inputs [1..max_batch, C, H, W]
    float32. Loads the timing cache from ``timing_cache_path`` when present and writes the
    updated cache back after the build. Raises EngineError when parsing or building fails."""
    t0 = time.perf_counter()
    trt_logger = trt_logger or make_trt_logger(trt)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT could not parse {onnx_path}: {errors or 'no parser error recorded'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)

    effective, why = choose_precision(precision, getattr(builder, "platform_has_fast_fp16", None))
    if effective == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    (log.warning if effective != precision else log.info)("TensorRT build: %s", why)

    c, h, w = input_shape
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (1, c, h, w), (max_batch, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)

    cache_bytes = timing_cache_path.read_bytes() if timing_cache_path.exists() else b""
    timing_cache = config.create_timing_cache(cache_bytes)
    if not config.set_timing_cache(timing_cache, ignore_mismatch=False):
        log.warning("TensorRT rejected the timing cache %s (other GPU or TensorRT version): timing from scratch",
                    timing_cache_path)
    log.info("TensorRT build: %s timing cache %s", "reusing" if cache_bytes else "starting a new", timing_cache_path)
    log.info("TensorRT build: %s, profile batch 1..%d (opt %d), input %s %s, workspace %d MiB",
             onnx_path, max_batch, max_batch, input_name, list(input_shape), workspace_mb)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT errors logged above)")
    plan = bytes(serialized)

    atomic_write_bytes(timing_cache_path, bytes(config.get_timing_cache().serialize()))
    seconds = time.perf_counter() - t0
    log.info("TensorRT build: done in %.1f s, plan %d bytes, %s", seconds, len(plan), effective)
    return BuildResult(plan=plan, effective_precision=effective, seconds=seconds)
