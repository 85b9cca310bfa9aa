"""Export a network to ONNX with a dynamic batch dimension (opset 17: what ONNX Runtime,
OpenVINO and TensorRT 10's parser all take)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from engines.atomicfile import mkstemp_like_open

OPSET = 17


def export_onnx(module: torch.nn.Module, path: str | Path, input_shape: tuple[int, int, int],
                input_name: str = "images", output_names: tuple[str, ...] = ("features",)) -> Path:
    """Write ``module`` to ``path`` atomically. input_shape is (C, H, W); batch is dynamic."""
    path = Path(path)
    module = module.eval()
    dummy = torch.zeros(1, *input_shape, dtype=torch.float32)
    axes = {input_name: {0: "batch"}, **{name: {0: "batch"} for name in output_names}}
    fd, tmp = mkstemp_like_open(path.parent, ".export-", ".onnx")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # the static "same" padding slices trigger harmless constant-folding notices
            warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
            # the TorchScript exporter is the one that needs no onnxscript; its deprecation is noted
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(module, (dummy,), tmp, input_names=[input_name], output_names=list(output_names),
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
