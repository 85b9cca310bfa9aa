"""The reference engine: runs the network in torch (CPU here, CUDA where available).

torch cannot read ONNX, so this engine rebuilds the network from ``spec.network`` (the JSON
description saved in the bundle) with the same weights the ONNX was exported from.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import EngineError, EngineSpec, run_in_chunks

log = logging.getLogger(__name__)


class TorchEngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["torch"] = "torch"
    threads: int = Field(0, ge=0, le=256)  # 0: torch's default
    device: Literal["cpu", "cuda", "auto"] = "auto"
    max_batch: int = Field(4, ge=1, le=64)


def build_network(description: dict, base_dir: Optional[Path] = None):
    """Network factories by description ``kind``; one explicit table. ``base_dir``: the folder
    holding the ONNX (and the bundle's arrays.npz, where trained head weights live)."""
    kind = description.get("kind", "patch_features")
    if kind == "patch_features":
        from engines.backbones.patch_features import build_patch_feature_net

        return build_patch_feature_net(description)
    if kind == "patch_features_head":
        from engines.backbones.heads import build_head_network

        return build_head_network(description, base_dir)
    raise EngineError(f"torch engine: unknown network kind {kind!r}; known: patch_features, patch_features_head")


class TorchEngine:
    kind = "torch"

    def __init__(self, spec: EngineSpec, config: TorchEngineConfig):
        import torch

        if spec.network is None:
            raise EngineError("torch engine needs the network description from the bundle manifest")
        if config.threads:
            torch.set_num_threads(config.threads)
        want = config.device
        if want == "auto":
            want = "cuda" if torch.cuda.is_available() else "cpu"
        elif want == "cuda" and not torch.cuda.is_available():
            raise EngineError("engine.device is cuda but torch sees no CUDA device; use device: cpu or auto")
        log.info("torch engine on %s (%d threads)", want, torch.get_num_threads())
        self._torch = torch
        self.device = torch.device(want)
        self.spec = dataclasses.replace(spec, max_batch=config.max_batch)
        self.precision = "fp32"
        self.net = build_network(spec.network, Path(spec.onnx_path).parent).to(self.device).eval()

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch

        def chunk(x: np.ndarray) -> dict[str, np.ndarray]:
            return {self.spec.output_names[0]: self.net(torch.from_numpy(x).to(self.device)).float().cpu().numpy()}

        with torch.inference_mode():
            return run_in_chunks(batch, self.spec, chunk)

    def warmup(self) -> None:
        self.run(np.zeros((1, *self.spec.input_shape), np.float32))

    def close(self) -> None:
        self.net = None
