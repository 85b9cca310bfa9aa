"""Calibrating on few golden images: the threshold comes from a handful of held-out scores, so
calibrate warns, says how uncertain the false-reject estimate is, and keeps both in the bundle
and the report. (The session bundle holds out 4 of 16 images: few enough to warn.)"""
from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from calibration.thresholds import few_heldout_warning, quantile_margin_threshold


def test_the_bundle_keeps_the_warning_and_the_upper_bound(bundle_dir):
    from inspector.bundle import load_bundle

    m = load_bundle(bundle_dir).manifest
    rule = m.thresholds.image_rule
    assert m.golden.holdout == rule.n == 4
    assert rule.frr_upper_95 == pytest.approx(1 - 0.05 ** (1 / 4), abs=0.2)  # 0 (or so) of 4 above
    assert len(m.warnings) == 1 and "4 held-out golden images" in m.warnings[0]


def test_the_summary_warns_and_states_the_upper_bound(aligned_calibration):
    from calibration.summary import print_summary

    # the reported case: 6 golden images, 1 held out, "false rejects expected ~0.00%" and no word more
    one = quantile_margin_threshold(np.array([2.5]), 0.99, 0.1)
    r = dataclasses.replace(aligned_calibration, image_threshold=one, holdout_scores=np.array([2.5]),
                            holdout_names=["g03.png"], warnings=[few_heldout_warning(one, 0.2)])
    out = io.StringIO()
    print_summary(r, None, out=out)
    text = out.getvalue()
    frr = next(line for line in text.splitlines() if line.startswith("false rejects"))
    assert "95.0%" in frr and "95% upper bound" in frr and "1 held-out" in frr, frr
    warning = [line for line in text.splitlines() if line.startswith("warning")]
    assert len(warning) == 1 and "1 held-out golden image" in warning[0], text


def test_the_report_shows_the_warning_and_the_upper_bound():
    from calibration.report import CalibrationReportData, render_calibration_report

    html = render_calibration_report(CalibrationReportData(
        heldout_scores=[1.0], threshold=1.5, pixel_threshold=None, expected_false_reject_rate=0.0,
        false_reject_upper_bound=0.95, warnings=["only 1 held-out golden image set the threshold"]))
    assert "only 1 held-out golden image set the threshold" in html
    assert "95.00 %" in html and "95% upper bound" in html
