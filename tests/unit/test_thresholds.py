import math

import numpy as np
import pytest

from calibration.evaluation import auroc
from calibration.thresholds import (MIN_HELDOUT_FOR_ESTIMATE, frr_upper_bound, few_heldout_warning,
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


# ---------------------------------------------------------------- threshold by false-reject budget
from calibration.thresholds import budget_threshold, frr_upper_bound  # noqa: E402


def _true_frr(value, draw, n=400_000):
    return float((draw(n) > value).mean())


def test_budget_with_many_held_out_scores_rejects_about_the_budget():
    """Skewed (gamma) scores, n large: the share of fresh good scores above the threshold is the budget."""
    rng = np.random.default_rng(0)
    draw = lambda n: rng.gamma(4.0, 0.5, n)  # noqa: E731
    for budget in (0.01, 0.05):
        t = budget_threshold(draw(5000), budget)
        assert t.rule == "budget" and t.false_reject_budget == budget
        assert _true_frr(t.value, draw) == pytest.approx(budget, rel=0.3)
        assert t.expected_frr == pytest.approx(budget, rel=0.3)
        assert t.frr_upper_95 < 2 * budget  # 5000 scores pin it down


def test_budget_with_few_scores_uses_a_tail_model_and_states_how_little_the_data_show():
    rng = np.random.default_rng(1)
    draw = lambda n: rng.lognormal(1.0, 0.15, n)  # noqa: E731
    frrs, uppers = [], []
    for _ in range(40):
        s = draw(20)
        t = budget_threshold(s, 0.01)
        assert t.value >= np.quantile(s, 0.99)  # never below the empirical quantile
        assert t.tail_model == "lognormal" and t.expected_frr <= 0.01 + 1e-12
        frrs.append(_true_frr(t.value, draw, 50_000))
        uppers.append(t.frr_upper_95)
    # the tail model extrapolates well past the largest of 20 scores: about the budget on average
    assert 0.003 < np.mean(frrs) < 0.03
    # 0 of 20 above: the held-out images alone only show FRR <= 1 - 0.05^(1/20) = 13.9 %
    assert uppers[0] == pytest.approx(1 - 0.05 ** (1 / 20), rel=1e-6)


def test_budget_on_scores_that_can_be_negative_fits_a_normal_tail():
    rng = np.random.default_rng(2)
    s = rng.normal(-1.0, 0.3, 30)
    t = budget_threshold(s, 0.02)
    assert t.tail_model == "normal"
    assert t.value == pytest.approx(max(s.mean() + 2.0537 * s.std(ddof=1), np.quantile(s, 0.98)), rel=1e-3)


def test_budget_constant_scores_and_bad_budgets():
    t = budget_threshold(np.full(5, 3.0), 0.01)
    assert t.value > 3.0 and t.empirical_frr == 0.0
    for bad in (0.0, 0.5, -0.1, 1.0):
        with pytest.raises(ValueError, match="budget"):
            budget_threshold(np.arange(10.0), bad)
    assert budget_threshold(np.arange(1.0, 11.0), 0.01).to_json()["rule"].startswith("budget")


def test_frr_upper_bound_clopper_pearson():
    assert frr_upper_bound(0, 20) == pytest.approx(1 - 0.05 ** (1 / 20))
    assert frr_upper_bound(0, 300) == pytest.approx(3 / 300, rel=0.01)  # the rule of three
    # k = 2 of 50: the exact one-sided 95% bound (binomial CDF at the bound is 5%)
    p = frr_upper_bound(2, 50)
    cdf = sum(math.comb(50, i) * p ** i * (1 - p) ** (50 - i) for i in range(3))
    assert cdf == pytest.approx(0.05, abs=1e-6)
    assert frr_upper_bound(50, 50) == 1.0
    with pytest.raises(ValueError):
        frr_upper_bound(3, 0)


# ---------------------------------------------------------------- how far a few held-out scores can be trusted
def binomial_cdf(k: int, n: int, p: float) -> float:
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))


@pytest.mark.parametrize("k,n", [(0, 1), (0, 4), (0, 10), (1, 10), (2, 50), (0, 400), (5, 400)])
def test_false_reject_upper_bound_is_the_clopper_pearson_one(k, n):
    ub = frr_upper_bound(k, n)
    # one-sided 95%: the largest rate at which seeing k or fewer of n above would still be 5% likely
    assert binomial_cdf(k, n, ub) == pytest.approx(0.05, abs=1e-6)
    assert k / n < ub < 1.0


def test_false_reject_upper_bound_reported_cases():
    assert frr_upper_bound(0, 1) == pytest.approx(0.95)  # 0 of 1 above: could be 95%
    assert frr_upper_bound(0, 4) == pytest.approx(1 - 0.05 ** 0.25)
    assert frr_upper_bound(3, 3) == 1.0


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
