"""Thresholds from defect-free scores only.

Rule (documented in the README): with s the held-out golden scores,

    threshold = Q_q(s) + margin * (Q_q(s) - median(s))

i.e. a high quantile, pushed out by a share of the spread above the median, so a threshold set
from few samples is not the largest sample itself. The expected false-reject rate it implies is
estimated two ways: the empirical share of held-out scores above it, and a normal fit of s. How
far that can be trusted: the one-sided 95% Clopper-Pearson upper bound on the rate, given k of
the n held-out scores above the threshold (0 of 1 above: it may be as high as 95%). Below
MIN_HELDOUT_FOR_ESTIMATE held-out scores calibration warns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Threshold:
    value: float
    quantile: float
    margin: float
    n: int
    empirical_frr: float  # share of held-out golden scores above the threshold
    normal_frr: float  # P(score > threshold) under a normal fit of the held-out scores
    frr_upper_95: float  # one-sided 95% upper bound on the false-reject rate from the n held-out scores

    @property
    def expected_frr(self) -> float:
        """The estimate calibrate reports: the larger of the empirical and normal-fit rates."""
        return max(self.normal_frr, self.empirical_frr)

    def to_json(self) -> dict:
        return {"value": self.value, "quantile": self.quantile, "margin": self.margin, "n": self.n,
                "empirical_frr": self.empirical_frr, "normal_frr": self.normal_frr,
                "frr_upper_95": self.frr_upper_95,
                "rule": "Q_q(heldout) + margin * (Q_q(heldout) - median(heldout))"}


# fewer held-out scores than this: the false-reject estimate is too rough to go unremarked
# (with 0 of 10 above the threshold, the rate can still be 26%)
MIN_HELDOUT_FOR_ESTIMATE = 10


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be thousands)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    log_n = math.lgamma(n + 1)
    return min(1.0, sum(math.exp(log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q)
                        for i in range(k + 1)))


def false_reject_upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen k times in n trials: the largest
    rate under which k or fewer would still happen with probability 1 - confidence."""
    if n <= 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    lo, hi = k / n, 1.0  # the CDF falls as the rate rises: bisect for CDF == alpha
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _binomial_cdf(k, n, mid) > alpha:
            lo = mid
        else:
            hi = mid
    return hi


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
                     frr_upper_95=false_reject_upper_bound(above, int(s.size)))
