"""Calibration's escape-rate step on a tiled frame runs only the tiles a pasted defect touches and
searches only the rows those tiles change (calibration/tile_memo.py, inspector/methods/search_memo.py);
what it measures is the same as scoring every synthetic image from scratch."""
from __future__ import annotations

import contextlib
from pathlib import Path

import calibration.calibrate as calibrate_module
from calibration.calibrate import calibrate
from calibration.tile_memo import TileMemo
from inspector.methods.search_memo import SearchMemo
from inspector.settings import settings_from_dict
from tests.integration.test_geometry import big_golden  # noqa: F401 (the fixture: 8 frames of 4 x 2 tiles)


def _settings():
    return settings_from_dict({
        "calibration": {"holdout": 0.5, "min_images": 4, "min_defect_px": 8, "synthetic_defects": 30},
        "engine": {"type": "onnxruntime", "threads": 2, "max_batch": 8},
        "scorer": {"coreset": {"ratio": 0.1, "max_size": 800}}}, base_dir=Path("/"))


def _rates(result) -> dict:
    return {k: v for k, v in result.detectability.to_json().items() if k != "seconds"}


def test_escape_rates_reuse_clean_tiles_and_rows_and_measure_the_same(big_golden, monkeypatch):
    made = []

    def spy(cls):
        class Spy(cls):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                made.append(self)
        return Spy

    monkeypatch.setattr(calibrate_module, "TileMemo", spy(TileMemo))
    monkeypatch.setattr(calibrate_module, "SearchMemo", spy(SearchMemo))
    reused = calibrate(_settings(), big_golden, None, progress=False, evaluate_only=True)
    tiles, rows = made
    assert reused.detectability is not None and sum(r.n for r in reused.detectability.by_size.values()) == 30
    # 4 x 2 tiles a frame: a small pasted defect leaves most of them as they were
    assert tiles.hits > 30 * 8 / 2 and rows.hits > rows.searched / 2

    # the same calibration with nothing answered from memory
    monkeypatch.setattr(TileMemo, "engine", lambda self: self._engine)
    monkeypatch.setattr(calibrate_module.search_memo, "reusing", lambda memo: contextlib.nullcontext())
    fresh = calibrate(_settings(), big_golden, None, progress=False, evaluate_only=True)
    assert fresh.image_threshold.value == reused.image_threshold.value
    assert _rates(fresh) == _rates(reused)
