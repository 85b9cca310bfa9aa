"""calibrate() closes every engine it opens, on every path: a fit that fails must not leak the
feature engine (a real onnxruntime session, observed), nor the held-out head engine."""
from __future__ import annotations

import numpy as np
import pytest

import calibration.calibrate as calibrate_module
import calibration.network as network_module
from calibration.synthetic import make_part
from calibration.calibrate import calibrate
from engines.registry import build_engine as real_build_engine
from inspector.errors import InspectorError
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings, write_png


class FitFailed(RuntimeError):
    pass


@pytest.fixture
def opened(monkeypatch) -> list:
    """Every engine calibrate builds (real ones), with whether close() was called."""
    engines = []

    def observed_build(config, spec):
        engine = real_build_engine(config, spec)
        real_close = engine.close
        record = {"kind": engine.kind, "closed": 0}

        def close():
            record["closed"] += 1
            real_close()

        engine.close = close
        engines.append(record)
        return engine

    monkeypatch.setattr(network_module, "build_engine", observed_build)
    return engines


def test_a_failed_fit_closes_the_feature_engine(opened, monkeypatch, golden_dir, tmp_path):
    def failing_fit(*args, **kwargs):
        raise FitFailed("the fitter broke")

    monkeypatch.setattr(calibrate_module, "fit_method", failing_fit)
    with pytest.raises(FitFailed):
        calibrate(small_settings(engine=FP32_ENGINE), golden_dir, tmp_path / "bundle", progress=False)
    assert opened and all(e["closed"] == 1 for e in opened), opened
    assert not (tmp_path / "bundle").exists()


def test_a_calibration_refused_while_reading_closes_the_engine_opened_ahead(opened, tmp_path):
    """The network is exported and opened while the golden images are read (calibration/network.py);
    when reading ends the calibration (too few images), that engine is closed too."""
    few = tmp_path / "few"
    few.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        write_png(few / f"g{i}.png", make_part(rng, size=TEST_SIZE))
    with pytest.raises(InspectorError, match="need at least"):
        calibrate(small_settings(engine=FP32_ENGINE), few, tmp_path / "bundle", progress=False)
    assert len(opened) == 1 and opened[0]["closed"] == 1, opened
