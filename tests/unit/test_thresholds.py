import math

import numpy as np
import pytest

from calibration.evaluation import auroc
from calibration.thresholds import (MIN_HELDOUT_FOR_ESTIMATE, false_reject_upper_bound, few_heldout_warning,
                                    quantile_margin_threshold)


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


# ---------------------------------------------------------------- how far a few held-out scores can be trusted
def binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("k,n", [(0, 1), (0, 4), (0, 10), (1, 10), (2, 50), (0, 400), (5, 400)])
def test_false_reject_upper_bound_is_the_clopper_pearson_one(k, n):
    ub = false_reject_upper_bound(k, n)
    # one-sided 95%: the largest rate at which seeing k or fewer of n above would still be 5% likely
    assert binomial_cdf(k, n, ub) == pytest.approx(0.05, abs=1e-6)
    assert k / n < ub < 1.0


def test_false_reject_upper_bound_reported_cases():
    assert false_reject_upper_bound(0, 1) == pytest.approx(0.95)  # 0 of 1 above: could be 95%
    assert false_reject_upper_bound(0, 4) == pytest.approx(1 - 0.05 ** 0.25)
    assert false_reject_upper_bound(3, 3) == 1.0


def test_one_held_out_score_warns_and_states_the_uncertainty():
    t = quantile_margin_threshold(np.array([2.5]), 0.99, 0.1)  # 6 golden images, 20% held out
    assert t.n == 1 and t.frr_upper_95 == pytest.approx(0.95)
    assert t.to_json()["frr_upper_95"] == t.frr_upper_95
    warning = few_heldout_warning(t, holdout_share=0.2)
    assert warning and "1 held-out" in warning and "95%" in warning and "50 golden images" in warning


def test_enough_held_out_scores_give_no_warning():
    t = quantile_margin_threshold(np.linspace(1, 2, MIN_HELDOUT_FOR_ESTIMATE), 0.99, 0.1)
    assert few_heldout_warning(t, holdout_share=0.2) is None
    assert t.frr_upper_95 == pytest.approx(1 - 0.05 ** (1 / MIN_HELDOUT_FOR_ESTIMATE))
