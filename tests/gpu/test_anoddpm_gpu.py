"""AnoDDPM where it is meant to run: calibrate on CUDA (no allow_cpu), then the daemon's pipeline
on the torch engine with device cuda scores a planted defect above the good parts. Skipped
without a CUDA device; run on a GPU machine with ``pytest -m gpu tests/gpu``."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


def test_anoddpm_calibrates_and_runs_on_cuda(tmp_path, golden_dir):
    from calibration.calibrate import calibrate
    from engines.torch_engine import TorchEngineConfig
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline
    from inspector.types import Frame
    from tests.conftest import small_settings
    from tests.unit._scorer_data import data, plant_defect

    settings = small_settings(scorer={"type": "reconstruction", "method": "anoddpm",
                                      "anoddpm": {"train_steps": 1500, "width": 64, "denoise_steps": 3}},
                              engine={"type": "torch", "device": "cuda"})
    calibrate(settings, golden_dir, tmp_path / "b", progress=False)
    pipeline = build_pipeline(load_bundle(tmp_path / "b"), TorchEngineConfig(device="cuda"))
    try:
        images = data()[2]
        frames = [Frame(id=str(i), source="t", captured_at=datetime.now(timezone.utc), image=im)
                  for i, im in enumerate([*images[:6], plant_defect(images[1])])]
        scores = [v.score for v in pipeline.inspect(frames)]
    finally:
        pipeline.engine.close()
    assert scores[-1] > max(scores[:6])
