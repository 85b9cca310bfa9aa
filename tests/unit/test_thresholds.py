import numpy as np
import pytest

from calibration.evaluation import auroc
from calibration.thresholds import quantile_margin_threshold


def test_quantile_plus_margin_rule():
    s = np.arange(1, 101, dtype=float)  # 1..100
    t = quantile_margin_threshold(s, 0.99, 0.1)
    q = np.quantile(s, 0.99)
    assert t.value == pytest.approx(q + 0.1 * (q - np.median(s)))
    assert t.empirical_frr == pytest.approx(0.0)
    assert 0.0 < t.normal_frr < 0.05


def test_constant_scores_still_give_a_threshold_above_them():
    t = quantile_margin_threshold(np.full(5, 3.0), 0.99, 0.1)
    assert t.value > 3.0 and t.empirical_frr == 0.0


def test_auroc_rank_identity_with_ties():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5  # a tie counts half
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = rng.normal(size=500) + y
    # brute force over all (pos, neg) pairs
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auroc(y, s) == pytest.approx(brute)
