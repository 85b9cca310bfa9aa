"""Calibration states its threshold as rates: the false-reject budget it was set for, and the escape
rate of synthetic defects by size (and of --defects images), in the bundle, the summary and the
report. Real calibrations of the synthetic demo parts."""
from __future__ import annotations

import io
import json

import numpy as np

from calibration.synthetic import make_part
from tests.conftest import TEST_SIZE, small_settings, write_png


def test_default_bundle_carries_budget_threshold_and_escape_rates(bundle_dir):
    m = json.loads((bundle_dir / "manifest.json").read_text())
    rule = m["thresholds"]["image_rule"]
    assert rule["rule"].startswith("budget") and rule["false_reject_budget"] == 0.01
    assert 0 < rule["frr_upper_95"] < 1 and rule["expected_frr"] <= 0.01 + 1e-9
    d = m["detectability"]
    assert [r["size_px"] for r in d["by_size"]] == [16, 32, 64]  # calibration.min_defect_px 16: 1x, 2x, 4x
    n_total = sum(r["n"] for r in d["by_size"])
    assert 15 <= n_total <= 120  # bounded
    found = {r["size_px"]: r["found"] / r["n"] for r in d["by_size"]}
    assert found[64] >= found[16] and found[32] >= 0.7  # big defects on a 128 px part are found
    assert set(d["by_kind"]) == {"scratch", "spot", "missing", "foreign", "texture"}
    assert d["statement"].startswith("defects >= 64 px found")
    assert m["metrics"]["seconds"]["detectability"] < 30


def test_quantile_rule_and_defects_folder_in_summary_and_report(tmp_path, golden_dir):
    from calibration.calibrate import calibrate
    from calibration.summary import print_summary, write_report

    defects = tmp_path / "defects"
    defects.mkdir()
    rng = np.random.default_rng(21)
    for i, kind in enumerate(["spot", "missing_hole", "scratch"]):
        write_png(defects / f"d{i}.png", make_part(rng, size=TEST_SIZE, defect=kind))
    settings = small_settings(calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 30,
                                           "min_defect_px": 6, "threshold": {"rule": "quantile_margin"}})
    r = calibrate(settings, golden_dir, tmp_path / "b", progress=False, defects_dir=defects)
    m = r.manifest.as_dict()
    assert m["thresholds"]["image_rule"]["rule"].startswith("Q_q")
    d = m["detectability"]
    assert [r["size_px"] for r in d["by_size"]] == [6, 12, 24]
    assert sum(r["n"] for r in d["by_size"]) == 30
    assert d["real_defects"]["n"] == 3
    on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert on_disk["detectability"] == d

    report = write_report(r, settings, defects)
    out = io.StringIO()
    print_summary(r, report, out=out)
    text = out.getvalue()
    assert "escapes       defects >= 24 px found" in text and "your defect images" in text
    assert "false rejects expected" in text
    html = report.read_text()
    assert "Escape rates by defect size" in html and "<th>24 px</th>" in html and "texture" in html


def test_budget_summary_states_the_bound_from_few_held_out_images(aligned_calibration, tmp_path):
    """With alignment on too: the synthetic frames go through registration like the held-out ones."""
    from calibration.summary import print_summary

    r = aligned_calibration
    out = io.StringIO()
    print_summary(r, None, out=out)
    text = out.getvalue()
    n = len(r.holdout_names)
    assert "false-reject budget 1%" in text
    assert f"of {n} held-out above, so the held-out images alone show <=" in text
    assert r.detectability is not None and r.detectability.by_size[32].n > 0


def test_missing_defects_folder_is_one_clear_error(tmp_path, golden_dir):
    import pytest

    from calibration.calibrate import calibrate
    from inspector.errors import InspectorError

    with pytest.raises(InspectorError, match="defects folder .*not found"):
        calibrate(small_settings(), golden_dir, tmp_path / "b", progress=False, defects_dir=tmp_path / "nope")
    assert not (tmp_path / "b").exists()


def test_no_escape_estimate_when_turned_off():
    from calibration.heldout import detectability
    from calibration.progress import Bar

    settings = small_settings(calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 0})
    never = lambda images: (_ for _ in ()).throw(AssertionError("nothing is to be scored"))  # noqa: E731
    assert detectability(never, [make_part(np.random.default_rng(0), size=64)], 1.0, settings, None,
                         Bar(False)) is None
