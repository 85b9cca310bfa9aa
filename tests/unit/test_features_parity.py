"""ONNX Runtime and torch run the same feature network to the same numbers, so a bundle scored
on either engine gives the same verdicts."""
import numpy as np
import pytest

from engines.onnxruntime_engine import OnnxRuntimeEngine, OnnxRuntimeEngineConfig
from engines.torch_engine import TorchEngine, TorchEngineConfig
from inspector.bundle import load_bundle


@pytest.fixture(scope="module")
def engines(bundle_dir):
    b = load_bundle(bundle_dir)
    spec = b.engine_spec(max_batch=4)
    ort = OnnxRuntimeEngine(spec, OnnxRuntimeEngineConfig(max_batch=4))
    tch = TorchEngine(spec, TorchEngineConfig(device="cpu", max_batch=4))
    yield b, ort, tch
    ort.close()
    tch.close()


def test_onnxruntime_matches_torch(engines):
    b, ort, tch = engines
    rng = np.random.default_rng(0)
    x = rng.random((3, *b.engine_spec().input_shape), dtype=np.float32)
    a = ort.run(x)["features"]
    t = tch.run(x)["features"]
    assert a.shape == t.shape == (3, b.manifest.network.feature_dim, x.shape[2] // 8, x.shape[3] // 8)
    # fp32 both ways; differences are accumulation order only
    np.testing.assert_allclose(a, t, rtol=1e-4, atol=1e-4)


def test_batches_larger_than_max_batch_are_split(engines):
    b, ort, _ = engines
    x = np.random.default_rng(1).random((6, *b.engine_spec().input_shape), dtype=np.float32)
    whole = ort.run(x)["features"]
    one_by_one = np.concatenate([ort.run(x[i:i + 1])["features"] for i in range(6)])
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-5, atol=1e-5)
