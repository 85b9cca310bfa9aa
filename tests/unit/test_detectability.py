"""Escape rates by defect size: counting, bounds, determinism, and that larger defects are found
more often, with a plain image-difference scorer (the calibrated pipeline's version is in
tests/integration/test_calibration_detectability.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.detectability import Detectability, Rate, defect_sizes, estimate_detectability
from calibration.synthetic import make_part
from calibration.synthetic_defects import KINDS


def _grey(im):
    return im if im.ndim == 2 else cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)


@pytest.fixture(scope="module")
def parts():
    rng = np.random.default_rng(11)
    fit = [make_part(rng, size=128) for _ in range(12)]
    held = [make_part(rng, size=128) for _ in range(6)]
    median = np.median(np.stack([_grey(p).astype(np.float32) for p in fit]), axis=0)
    reference = cv2.GaussianBlur(median, (0, 0), 2.0)

    def score(images):
        """Largest blurred difference from the golden median: a real (if crude) anomaly score."""
        return np.array([np.abs(cv2.GaussianBlur(_grey(im).astype(np.float32), (0, 0), 2.0) - reference).max()
                         for im in images])

    threshold = float(score(held).max()) * 1.05
    return held, score, threshold


def test_larger_defects_are_found_more_often(parts):
    held, score, threshold = parts
    d = estimate_detectability(score, held, threshold, [2, 24], max_images=60, seed=0)
    assert d.by_size[24].found_share > d.by_size[2].found_share
    assert d.by_size[24].found_share >= 0.6
    # every size has every kind, evenly
    for kind in KINDS:
        assert d.by_kind[kind][2].n == d.by_kind[kind][24].n == 6
    assert d.by_size[2].n == 6 * len(KINDS)


def test_counts_bounded_sizes_too_large_left_out_and_real_defects(parts):
    held, score, threshold = parts
    calls = []

    def counting(images):
        calls.append(len(images))
        return score(images)

    real = [make_part(np.random.default_rng(3), size=128, defect="spot") for _ in range(3)] + [held[0]]
    d = estimate_detectability(counting, held, threshold, defect_sizes(8) + [100], max_images=45,
                               real_defects=real)
    assert d.sizes_left_out == [100]  # a 100 px defect does not fit a 128 px image
    assert sorted(d.by_size) == [8, 16, 32]
    assert sum(r.n for r in d.by_size.values()) == 45  # 45 // (3 sizes x 5 kinds) = 3 per cell
    assert max(calls) <= 16  # scored in chunks, frames can be large
    assert d.real.n == 4 and d.real.found <= 3  # the golden image among them is not a defect
    # small golden sets: at most per_image defects of a kind and size per image
    small = estimate_detectability(score, held[:2], threshold, [16], per_image=2, max_images=1000)
    assert all(v[16].n == 4 for v in small.by_kind.values())


def test_same_seed_same_rates(parts):
    held, score, threshold = parts
    a = estimate_detectability(score, held, threshold, [6, 12], max_images=30, seed=4)
    b = estimate_detectability(score, held, threshold, [6, 12], max_images=30, seed=4)
    assert a.to_json() | {"seconds": 0} == b.to_json() | {"seconds": 0}


def test_statement_and_json():
    d = Detectability(threshold=1.5, min_contrast=15.0, by_size={8: Rate(40, 28), 16: Rate(40, 39)},
                      by_kind={"spot": {8: Rate(8, 5), 16: Rate(8, 8)}}, real=Rate(10, 9))
    assert d.statement() == ("defects >= 16 px found 98% of the time (n=40), >= 8 px 70% (n=40); "
                             "your defect images: 90% found (n=10)")
    j = d.to_json()
    assert j["by_size"][0] == {"size_px": 8, "n": 40, "found": 28, "escape_rate": 0.3,
                               "escape_upper_95": pytest.approx(0.43, abs=0.02)}
    assert [r["size_px"] for r in j["by_size"]] == [8, 16] and j["by_kind"]["spot"][1]["found"] == 8
    assert j["real_defects"]["found"] == 9 and j["statement"] == d.statement()
