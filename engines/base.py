"""The Engine interface every backend implements (torch, ONNX Runtime, OpenVINO, TensorRT)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)


# Engines report fp32 / fp16 / bf16; other spellings (OpenVINO's f32, numpy's float32) that an
# older bundle or a third-party engine might carry are read as the same precision.
PRECISION_NAMES = {"fp32": "fp32", "f32": "fp32", "float32": "fp32",
                   "fp16": "fp16", "f16": "fp16", "float16": "fp16",
                   "bf16": "bf16", "bfloat16": "bf16"}


def normalise_precision(name: str) -> str:
    """"f32" -> "fp32" etc.; an unknown name is returned lower-cased (and never equals a known one)."""
    key = str(name).strip().lower()
    return PRECISION_NAMES.get(key, key)


class EngineUnavailable(RuntimeError):
    """The backend's libraries or hardware are missing on this machine; the message says
    what to install or where to run."""


class EngineError(RuntimeError):
    """The backend failed while building or running a network."""


@dataclass(frozen=True)
class EngineSpec:
    """What a network takes and gives.

    input_shape: (C, H, W) of the float32 NCHW input (the batch dimension is dynamic).
    output_names: named outputs, each float32 [N, C_out, h, w].
    max_batch: the largest batch the engine accepts in one run() call.
    """

    onnx_path: str
    input_name: str
    input_shape: tuple[int, int, int]
    output_names: tuple[str, ...]
    max_batch: int = 8
    # JSON description of the network (backbone name, weights, layers, reduction...), used by
    # engines that rebuild the network from source (torch) instead of reading the ONNX file.
    network: Optional[dict] = None


@runtime_checkable
class Engine(Protocol):
    """Runs one network. ``run`` takes float32 NCHW with 1 <= N <= spec.max_batch and returns
    {output name: float32 array with leading dim N}. Implementations split larger batches."""

    spec: EngineSpec
    kind: str  # "torch", "onnxruntime", "openvino", "tensorrt"
    precision: str  # "fp32", "fp16", "bf16"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...

    def warmup(self) -> None: ...

    def close(self) -> None: ...


def run_in_chunks(batch: np.ndarray, spec: EngineSpec,
                  run_chunk: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The shared half of every engine's ``run``: check the batch against ``spec.input_shape``,
    run ``run_chunk`` on pieces of at most ``spec.max_batch`` frames and join the outputs. One
    piece (the usual case on a line) is returned as it is, without a copy."""
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(spec.input_shape) or batch.shape[0] < 1:
        raise EngineError(f"expected float32 [N, {', '.join(map(str, spec.input_shape))}], got {list(batch.shape)}")
    mb = spec.max_batch
    parts = [run_chunk(batch[i:i + mb]) for i in range(0, batch.shape[0], mb)]
    if len(parts) == 1:
        return parts[0]
    return {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}


def warm_up(engine, label: str) -> None:
    """Run batch 1 and batch max_batch once (plans, kernels and buffers are made on first use) and
    log how long it took."""
    t0 = time.perf_counter()
    for n in sorted({1, engine.spec.max_batch}):
        engine.run(np.zeros((n, *engine.spec.input_shape), np.float32))
    log.info("%s warm-up (batch 1 and %d) took %.0f ms", label, engine.spec.max_batch, (time.perf_counter() - t0) * 1e3)
