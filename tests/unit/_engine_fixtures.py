"""Shared by the engine tests: a tiny two-conv ONNX network with a dynamic batch dimension.

Input "images" float32 [N, 3, 32, 32]; outputs "features" [N, 8, 16, 16] (stride 2) and
"features_s4" [N, 16, 8, 8] (stride 4), like the backbone's two stage maps.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from engines.base import EngineSpec

INPUT_NAME = "images"
INPUT_SHAPE = (3, 32, 32)
OUTPUT_NAMES = ("features", "features_s4")


def export_tiny_onnx(path: Path) -> Path:
    import torch

    class TwoConv(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.c2 = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)

        def forward(self, x):
            a = torch.relu(self.c1(x))
            return a, self.c2(a)

    torch.manual_seed(0)
    dyn = {n: {0: "n"} for n in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TwoConv().eval(), (torch.zeros(1, *INPUT_SHAPE),), str(path), input_names=[INPUT_NAME],
                          output_names=list(OUTPUT_NAMES), dynamic_axes=dyn, dynamo=False, opset_version=17)
    return path


def tiny_spec(onnx_path: Path, max_batch: int = 4) -> EngineSpec:
    return EngineSpec(onnx_path=str(onnx_path), input_name=INPUT_NAME, input_shape=INPUT_SHAPE,
                      output_names=OUTPUT_NAMES, max_batch=max_batch)


def ort_reference(onnx_path: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUT_NAMES, sess.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})))


def random_batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)
