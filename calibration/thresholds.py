"""Thresholds from defect-free scores only.

Rule (documented in the README): with s the held-out golden scores,

    threshold = Q_q(s) + margin * (Q_q(s) - median(s))

i.e. a high quantile, pushed out by a share of the spread above the median, so a threshold set
from few samples is not the largest sample itself. The expected false-reject rate it implies is
estimated two ways: the empirical share of held-out scores above it, and a normal fit of s.

Rule ``budget`` (the default, ``budget_threshold``): the threshold that rejects a share b (the
false-reject budget, ``calibration.false_reject_budget``) of good parts. With n held-out scores:

- when n*b >= 10 (ten or more held-out scores lie beyond it), the empirical (1-b) quantile: the
  data reach that far into the tail;
- else a tail model's (1-b) quantile, never below the empirical one: a log-normal fit of s when
  every score is positive (distances: skewed to the right, and heavier-tailed than a normal, so
  the budget errs on the side of fewer false rejects), a normal fit otherwise.

Either way the held-out images alone bound the false-reject rate only so far: k of n above the
threshold give a one-sided 95% Clopper-Pearson upper bound (``frr_upper_bound``; 0 of 20: 13.9%),
stated next to the estimate so a small golden set is not mistaken for a proof.

Below MIN_HELDOUT_FOR_ESTIMATE held-out scores calibration warns (``few_heldout_warning``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Threshold:
    value: float
    quantile: float
    margin: float
    n: int
    empirical_frr: float  # share of held-out golden scores above the threshold
    normal_frr: float  # P(score > threshold) under a normal fit of the held-out scores
    # rule "budget" only (budget_threshold):
    rule: str = "quantile_margin"
    false_reject_budget: Optional[float] = None  # b: the share of good parts it may reject
    tail_model: Optional[str] = None  # "empirical", "lognormal" or "normal": what set the value
    # the estimate of P(good score > threshold): the budget rule's, or for quantile_margin the
    # larger of the empirical and normal-fit rates (what the summary and report state)
    expected_frr: Optional[float] = None
    frr_upper_95: Optional[float] = None  # what the held-out counts alone guarantee (95%)

    def to_json(self) -> dict:
        if self.rule == "budget":
            return {"value": self.value, "n": self.n, "false_reject_budget": self.false_reject_budget,
                    "tail_model": self.tail_model, "expected_frr": self.expected_frr,
                    "frr_upper_95": self.frr_upper_95, "empirical_frr": self.empirical_frr,
                    "normal_frr": self.normal_frr, "quantile": self.quantile, "margin": self.margin,
                    "rule": "budget: Q_(1-b) of a tail model fitted to the held-out scores (log-normal, or "
                            "normal when some are <= 0), never below their empirical Q_(1-b); the "
                            "empirical Q_(1-b) alone when n*b >= 10"}
        return {"value": self.value, "quantile": self.quantile, "margin": self.margin, "n": self.n,
                "empirical_frr": self.empirical_frr, "normal_frr": self.normal_frr,
                "frr_upper_95": self.frr_upper_95,
                "rule": "Q_q(heldout) + margin * (Q_q(heldout) - median(heldout))"}


# fewer held-out scores than this: the false-reject estimate is too rough to go unremarked
# (with 0 of 10 above the threshold, the rate can still be 26%)
MIN_HELDOUT_FOR_ESTIMATE = 10


def few_heldout_warning(t: "Threshold", holdout_share: float) -> str | None:
    """A one-line warning when ``t`` was set from fewer than MIN_HELDOUT_FOR_ESTIMATE held-out
    scores (None otherwise): how high the false-reject rate may really be, and what to do."""
    if t.n >= MIN_HELDOUT_FOR_ESTIMATE:
        return None
    needed = math.ceil(MIN_HELDOUT_FOR_ESTIMATE / holdout_share)
    return (f"only {t.n} held-out golden image{'s' if t.n != 1 else ''} set the threshold: the false-reject "
            f"rate estimated ~{t.expected_frr * 100:.2f}% could be as high as {t.frr_upper_95 * 100:.0f}% "
            f"(95% upper bound); calibrate on at least {needed} golden images for {MIN_HELDOUT_FOR_ESTIMATE} "
            f"held out (calibration.holdout {holdout_share:g}), or raise calibration.holdout")


def quantile_margin_threshold(scores: np.ndarray, quantile: float, margin: float) -> Threshold:
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no held-out scores to set a threshold from")
    q = float(np.quantile(s, quantile))
    med = float(np.median(s))
    value = q + margin * max(q - med, 0.0)
    if value <= q:  # all scores equal: keep a strictly higher threshold
        value = q + max(abs(q) * 1e-3, 1e-6)
    mu, sd = float(s.mean()), float(s.std(ddof=1)) if s.size > 1 else 0.0
    normal = 0.5 * math.erfc((value - mu) / (sd * math.sqrt(2))) if sd > 0 else 0.0
    above = int((s > value).sum())
    return Threshold(value=value, quantile=quantile, margin=margin, n=int(s.size),
                     empirical_frr=above / s.size, normal_frr=float(normal),
                     expected_frr=max(float(normal), above / s.size),
                     frr_upper_95=frr_upper_bound(above, int(s.size)))


def frr_upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen k times in n trials: the p at which
    seeing k or fewer has probability 1 - confidence (k = 0: 1 - (1 - confidence)^(1/n))."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"frr_upper_bound: need 0 <= k <= n and n > 0, got k={k}, n={n}")
    if k == n:
        return 1.0
    alpha = 1.0 - confidence

    def cdf(p: float) -> float:  # P(X <= k), X ~ Binomial(n, p); log terms, so large n does not overflow
        lp, lq = math.log(p), math.log1p(-p)
        return sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq)
                   for i in range(k + 1))

    lo, hi = k / n, 1.0  # cdf falls as p grows, to 0 at 1: bisect
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) > alpha else (lo, mid)
    return hi


EMPIRICAL_TAIL = 10  # held-out scores beyond the quantile needed to trust the empirical quantile alone


def budget_threshold(scores: np.ndarray, budget: float) -> Threshold:
    """The threshold that rejects a share ``budget`` of good parts (module docstring: rule budget)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("no held-out scores to set a threshold from")
    if not 0.0 < budget < 0.5:
        raise ValueError(f"false-reject budget {budget}: expected a share in (0, 0.5), e.g. 0.01 for 1%")
    p = 1.0 - budget
    empirical_q = float(np.quantile(s, p))
    sd = float(s.std(ddof=1)) if s.size > 1 else 0.0
    if s.size * budget >= EMPIRICAL_TAIL:
        value, model = empirical_q, "empirical"
    elif s.min() > 0 and s.size > 1 and float(np.log(s).std(ddof=1)) > 0:
        logs = np.log(s)
        lognormal = NormalDist(float(logs.mean()), float(logs.std(ddof=1)))
        value, model = max(math.exp(lognormal.inv_cdf(p)), empirical_q), "lognormal"
    elif sd > 0:
        value, model = max(NormalDist(float(s.mean()), sd).inv_cdf(p), empirical_q), "normal"
    else:
        value, model = empirical_q, "normal"
    if value <= float(s.max()) and sd == 0:  # all scores equal: keep a strictly higher threshold
        value = float(s.max()) + max(abs(float(s.max())) * 1e-3, 1e-6)
    above = int((s > value).sum())
    normal = 1.0 - NormalDist(float(s.mean()), sd).cdf(value) if sd > 0 else 0.0
    if model == "empirical" or sd == 0:
        expected = above / s.size
    else:  # the model's (1-b) quantile, or above it the data's own (1-b) quantile: b either way
        expected = budget
    return Threshold(value=float(value), quantile=p, margin=0.0, n=int(s.size), empirical_frr=above / s.size,
                     normal_frr=float(normal), rule="budget", false_reject_budget=float(budget),
                     tail_model=model, expected_frr=float(expected),
                     frr_upper_95=frr_upper_bound(above, int(s.size), 0.95))
