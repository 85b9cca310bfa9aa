"""The Engine interface every backend implements (torch, ONNX Runtime, OpenVINO, TensorRT)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, runtime_checkable

import numpy as np


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
