"""ONNX Runtime engine: the CPU default for the daemon (CUDA/TensorRT execution providers
where onnxruntime-gpu is installed)."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import EngineSpec, EngineUnavailable, run_in_chunks
from engines.ort_providers import check_session_providers, resolve_providers

log = logging.getLogger(__name__)


class OnnxRuntimeEngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["onnxruntime"] = "onnxruntime"
    threads: int = Field(0, ge=0, le=256)  # 0: onnxruntime picks (all physical cores)
    # Let idle intra-op threads busy-wait for the next parallel section. Off by default: on a
    # small CPU the spinning threads take the cores the scorer's BLAS, the writer and the
    # sources need right after each run. Measured on the 2-core dev VM (efficientnet_lite0
    # 256x256 batch 1, then the 4000-row bank search, 3 alternating runs, load ~4.5):
    # spin on 36.4-36.8 ms features / 88 ms per frame, spin off 20.5-25.0 ms / 52-57 ms.
    spin: bool = False
    max_batch: int = Field(4, ge=1, le=64)
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    require_gpu: bool = False


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OnnxRuntimeEngine:
    kind = "onnxruntime"

    def __init__(self, spec: EngineSpec, config: OnnxRuntimeEngineConfig):
        try:
            import onnxruntime as ort
        except ImportError:
            raise EngineUnavailable("engine.type onnxruntime: pip install onnxruntime (or onnxruntime-gpu)") from None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Always an explicit count: left at 0, onnxruntime also pins its threads to cores, and the
        # pinned threads then fight the daemon's scoring, decoding and writing threads for them
        # (measured: 95-100 vs 117 frames/s through the daemon on 2 cores).
        opts.intra_op_num_threads = config.threads or _usable_cpus()
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.spin else "0")
        providers = resolve_providers(config.providers, config.require_gpu)
        self.session = ort.InferenceSession(str(spec.onnx_path), opts, providers=providers)
        active = check_session_providers(self.session, config.providers, config.require_gpu, log)
        self.spec = dataclasses.replace(spec, max_batch=config.max_batch)
        self.precision = "fp32"
        log.info("onnxruntime %s engine on %s (threads %s, spin-wait %s)", ort.__version__,
                 active, config.threads or "auto", "on" if config.spin else "off")

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        names = list(self.spec.output_names)
        return run_in_chunks(batch, self.spec,
                             lambda x: dict(zip(names, self.session.run(names, {self.spec.input_name: x}))))

    def warmup(self) -> None:
        self.run(np.zeros((1, *self.spec.input_shape), np.float32))

    def close(self) -> None:
        self.session = None
