"""The real TensorRT 10 + pycuda path on an NVIDIA GPU. Skipped where tensorrt or pycuda does
not import (CI, developer laptops); run on the line-side machine with ``pytest -m gpu tests/gpu``."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

trt = pytest.importorskip("tensorrt")
pytest.importorskip("pycuda.driver")

from tests.unit._engine_fixtures import OUTPUT_NAMES, export_tiny_onnx, ort_reference, random_batch, tiny_spec  # noqa: E402

from engines.tensorrt_engine import TensorRTEngine, TensorRTEngineConfig  # noqa: E402

# FP32 plans may use TF32 tensor cores (on by default in TensorRT for Ampere and newer): ~1e-3.
TOL = {"fp32": 5e-3, "fp16": 3e-2}


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return export_tiny_onnx(tmp_path_factory.mktemp("trt") / "backbone.onnx")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_real_tensorrt_matches_onnxruntime_and_caches(onnx_path, precision):
    cfg = TensorRTEngineConfig(precision=precision, max_batch=4, workspace_mb=256)
    eng = TensorRTEngine(tiny_spec(onnx_path), cfg)
    try:
        eng.warmup()
        for n in (1, 3, 4, 6):
            x = random_batch(n, seed=n)
            got, want = eng.run(x), ort_reference(onnx_path, x)
            for k in OUTPUT_NAMES:
                assert got[k].shape == want[k].shape and got[k].dtype == np.float32
                scale = max(1.0, float(np.abs(want[k]).max()))
                assert np.abs(got[k] - want[k]).max() <= TOL[eng.precision] * scale, (k, n)
    finally:
        eng.close()
    cache = onnx_path.parent / "engine-cache"
    assert (cache / "timing.cache").stat().st_size > 0
    side = json.loads((cache / "backbone.plan.json").read_text())
    assert side["key"]["tensorrt_version"] == trt.__version__ and side["key"]["precision"] == precision

    again = TensorRTEngine(tiny_spec(onnx_path), cfg)
    try:
        assert again.plan_status == "cached"
        x = random_batch(2, seed=11)
        np.testing.assert_allclose(again.run(x)["features"], ort_reference(onnx_path, x)["features"],
                                   atol=TOL[again.precision] * 4)
    finally:
        again.close()
