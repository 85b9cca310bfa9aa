"""calibrate() closes every engine it opens, on every path: a fit that fails must not leak the
feature engine (a real onnxruntime session, observed), nor the held-out head engine."""
from __future__ import annotations

import pytest

import calibration.calibrate as calibrate_module
from calibration.calibrate import calibrate
from engines.registry import build_engine as real_build_engine
from tests.conftest import FP32_ENGINE, small_settings


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

    monkeypatch.setattr(calibrate_module, "build_engine", observed_build)
    return engines


def test_a_failed_fit_closes_the_feature_engine(opened, monkeypatch, golden_dir, tmp_path):
    def failing_fit(*args, **kwargs):
        raise FitFailed("the fitter broke")

    monkeypatch.setattr(calibrate_module, "fit_method", failing_fit)
    with pytest.raises(FitFailed):
        calibrate(small_settings(engine=FP32_ENGINE), golden_dir, tmp_path / "bundle", progress=False)
    assert opened and all(e["closed"] == 1 for e in opened), opened
    assert not (tmp_path / "bundle").exists()


def test_a_successful_calibration_closes_every_engine_once(opened, golden_dir, tmp_path):
    calibrate(small_settings(engine=FP32_ENGINE, calibration={"holdout": 0.25, "min_images": 4,
                                                             "synthetic_defects": 0}),
              golden_dir, tmp_path / "bundle", progress=False)
    assert opened and all(e["closed"] == 1 for e in opened), opened
