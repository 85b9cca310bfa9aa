"""TensorRT 10 engine: ONNX → cached plan → execution context with page-locked host buffers.

Importing this module imports neither tensorrt nor pycuda; the constructor does, and raises
EngineUnavailable with the install line when they are missing, so a config naming
``engine.type: tensorrt`` validates on any machine.

Data path per ``run`` chunk (N <= max_batch): float32 NCHW batch → page-locked host input
buffer → device (``memcpy_htod_async``) → ``execute_async_v3`` → device outputs → page-locked
host output buffers (``memcpy_dtoh_async``) → stream sync → copies returned. Host and device
buffers are allocated once for max_batch and reused for every frame; only the input shape
(``set_input_shape``) changes per call.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines import plan_cache
from engines.hashing import file_sha256
from engines.base import EngineError, EngineSpec, EngineUnavailable, run_in_chunks, warm_up

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "engine.type tensorrt needs TensorRT 10 and pycuda: install inspector[tensorrt] on the line-side "
    "NVIDIA machine (pip install --extra-index-url https://pypi.nvidia.com 'inspector[tensorrt]')"
)


class TensorRTEngineConfig(BaseModel):
    """``engine:`` section for TensorRT. The plan is built on first start (or ahead of time by
    ``inspector build-engine``) and cached in ``engine-cache/`` next to the bundle's ONNX."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["tensorrt"] = "tensorrt"
    # fp16 falls back to fp32 (logged) on a GPU without fast FP16. engine.precision reports what
    # the plan was built with ("fp16" or "fp32"); calibration records it in the bundle and the
    # daemon refuses a bundle calibrated at another precision (inspector.runtime.check_precision).
    precision: Literal["fp16", "fp32"] = "fp16"
    max_batch: int = Field(4, ge=1, le=64)  # profile max; run() splits larger batches
    workspace_mb: int = Field(1024, ge=16, le=65536)  # builder scratch memory limit
    # None: engine-cache/timing.cache next to the ONNX file.
    timing_cache: Optional[Path] = None
    device: int = Field(0, ge=0, le=63)  # CUDA device index


def import_backends():
    """(tensorrt, pycuda.driver), or EngineUnavailable saying what to install."""
    try:
        import tensorrt as trt
        import pycuda.driver as cuda
    except ImportError as exc:
        raise EngineUnavailable(f"{INSTALL_HINT} [{exc}]") from None
    major = str(getattr(trt, "__version__", "0")).split(".")[0]
    if major != "10":
        raise EngineUnavailable(f"found TensorRT {getattr(trt, '__version__', '?')}; {INSTALL_HINT}")
    return trt, cuda


class TensorRTEngine:
    """Engine protocol on TensorRT 10.

    run(batch): batch float32 [N, C, H, W] (C, H, W = spec.input_shape), any N >= 1; returns
    {output name: float32 [N, C_out, h, w]} for spec.output_names. Not thread-safe: one
    inference worker owns it (it pushes its CUDA context around every call, so that worker may
    be another thread than the one that built it).
    """

    kind = "tensorrt"

    def __init__(self, spec: EngineSpec, config: TensorRTEngineConfig):
        trt, cuda = import_backends()
        self._trt, self._cuda = trt, cuda
        self.config = config
        self.spec = dataclasses.replace(spec, max_batch=config.max_batch)
        self._closed = False
        self.plan_path: Optional[Path] = None
        self.plan_status = ""  # "cached" or "built", for build-engine's report
        try:
            cuda.init()
            device = cuda.Device(config.device)
        except Exception as exc:  # pycuda raises its own cuda.Error / RuntimeError / LogicError
            raise EngineUnavailable(f"engine.type tensorrt: no usable CUDA device {config.device} ({exc})") from None
        self._ctx = device.retain_primary_context()
        self._ctx.push()
        try:
            gpu_name = device.name()
            cc = "%d.%d" % tuple(device.compute_capability())
            log.info("TensorRT %s on GPU %d %s (compute capability %s)", trt.__version__, config.device, gpu_name, cc)
            from engines.tensorrt_build import make_trt_logger

            self._trt_logger = make_trt_logger(trt)
            self._engine, self.precision = self._load_or_build(gpu_name, cc)
            self._context = self._engine.create_execution_context()
            self._bind()
            self._stream = cuda.Stream()
        except BaseException:
            self._ctx.pop()
            self._ctx.detach()
            raise
        self._ctx.pop()

    # ------------------------------------------------------------------ build / cache
    def plan_key(self, gpu_name: str, compute_capability: str) -> plan_cache.PlanKey:
        return plan_cache.PlanKey(
            onnx_sha256=file_sha256(Path(self.spec.onnx_path)),
            tensorrt_version=str(self._trt.__version__),
            gpu_name=gpu_name,
            compute_capability=compute_capability,
            precision=self.config.precision,
            profile=plan_cache.profile_string(self.spec.input_shape, self.config.max_batch),
        )

    def _load_or_build(self, gpu_name: str, cc: str) -> tuple[object, str]:
        """(deserialized ICudaEngine, precision) from the cached plan, or from one built and stored
        now; a cached plan that does not deserialize (e.g. after a driver change) is rebuilt once.
        Sets self._runtime, self.plan_path and self.plan_status."""
        onnx = Path(self.spec.onnx_path)
        key = self.plan_key(gpu_name, cc)  # hashes the ONNX once; reused if the plan must be rebuilt
        plan_path = plan_cache.plan_path_for(onnx)
        self.plan_path = plan_path
        cached, reason = plan_cache.lookup(plan_path, key)
        if cached is not None:
            log.info("TensorRT plan cache hit: %s (%s)", plan_path, cached.effective_precision)
            self.plan_status = "cached"
            plan, precision = cached.plan, cached.effective_precision
        else:
            log.info("TensorRT plan: building, because %s", reason)
            self.plan_status = "built"
            plan, precision = build_and_store(self._trt, self.spec, self.config, key, plan_path, self._trt_logger)
        self._runtime = self._trt.Runtime(self._trt_logger)
        engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None and self.plan_status == "cached":
            log.info("TensorRT plan: rebuilding, because the cached plan %s did not deserialize "
                     "(see the TensorRT error above)", plan_path)
            plan, precision = build_and_store(self._trt, self.spec, self.config, key, plan_path, self._trt_logger)
            self.plan_status = "built"
            engine = self._runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError("TensorRT could not deserialize the plan it just built (see TensorRT errors above)")
        return engine, precision

    # ------------------------------------------------------------------ buffers
    def _bind(self) -> None:
        trt, cuda, engine, ctx = self._trt, self._cuda, self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if inputs != [self.spec.input_name]:
            raise EngineError(f"plan inputs {inputs} do not match the spec input {self.spec.input_name!r}")
        missing = [n for n in self.spec.output_names if n not in outputs]
        if missing:
            raise EngineError(f"plan has no output(s) {missing}; it has {outputs}")
        c, h, w = self.spec.input_shape
        if not ctx.set_input_shape(self.spec.input_name, (self.config.max_batch, c, h, w)):
            raise EngineError(f"input shape {[self.config.max_batch, c, h, w]} is outside the plan's profile")
        self._host: dict[str, np.ndarray] = {}  # flat page-locked buffers, sized for max_batch
        self._device: dict[str, object] = {}
        for name in names:
            shape = tuple(ctx.get_tensor_shape(name))  # resolved at max_batch
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            host = cuda.pagelocked_empty(int(np.prod(shape)), dtype)
            dev = cuda.mem_alloc(host.nbytes)
            ctx.set_tensor_address(name, int(dev))
            self._host[name], self._device[name] = host, dev
            log.debug("TensorRT %s %s %s %s", "input" if name in inputs else "output", name, list(shape), dtype)
        self._outputs = outputs

    # ------------------------------------------------------------------ Engine protocol
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._closed:
            raise EngineError("TensorRT engine is closed")
        return run_in_chunks(batch, self.spec, self._run_chunk)

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        cuda, ctx, name_in = self._cuda, self._context, self.spec.input_name
        self._ctx.push()
        try:
            if not ctx.set_input_shape(name_in, chunk.shape):
                raise EngineError(f"TensorRT refused input shape {list(chunk.shape)}")
            host_in = self._host[name_in][: chunk.size]
            host_in[:] = chunk.reshape(-1)
            cuda.memcpy_htod_async(self._device[name_in], host_in, self._stream)
            if not ctx.execute_async_v3(self._stream.handle):
                raise EngineError("TensorRT execute_async_v3 failed (see TensorRT errors above)")
            shapes = {}
            for name in self.spec.output_names:
                shapes[name] = tuple(ctx.get_tensor_shape(name))
                count = int(np.prod(shapes[name]))
                cuda.memcpy_dtoh_async(self._host[name][:count], self._device[name], self._stream)
            self._stream.synchronize()
            # copies: the page-locked buffers are overwritten by the next call
            return {n: self._host[n][: int(np.prod(s))].reshape(s).astype(np.float32, copy=True)
                    for n, s in shapes.items()}
        finally:
            self._ctx.pop()

    def warmup(self) -> None:
        warm_up(self, "TensorRT")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ctx.push()
        try:
            for dev in self._device.values():
                dev.free()
            self._device.clear()
            self._host.clear()
            # TensorRT objects and the stream go while their CUDA context is still current
            self._context = self._engine = self._runtime = self._stream = None
        finally:
            self._ctx.pop()
            self._ctx.detach()


def build_and_store(trt, spec: EngineSpec, config: TensorRTEngineConfig, key: plan_cache.PlanKey,
                    plan_path: Path, trt_logger=None) -> tuple[bytes, str]:
    """Build the plan for ``key`` and store it (plan + JSON sidecar). Returns (plan, precision)."""
    from engines.tensorrt_build import build_plan

    onnx = Path(spec.onnx_path)
    timing = Path(config.timing_cache) if config.timing_cache else plan_cache.default_timing_cache_path(onnx)
    result = build_plan(trt, onnx, spec.input_name, tuple(spec.input_shape), config.max_batch,
                        config.precision, config.workspace_mb, timing, trt_logger)
    plan_cache.store(plan_path, key, result.plan, result.effective_precision, result.seconds)
    log.info("TensorRT plan stored: %s", plan_path)
    return result.plan, result.effective_precision
