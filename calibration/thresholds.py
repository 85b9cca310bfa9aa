"""Thresholds from defect-free scores only.

Rule (documented in the README): with s the held-out golden scores,

    threshold = Q_q(s) + margin * (Q_q(s) - median(s))

i.e. a high quantile, pushed out by a share of the spread above the median, so a threshold set
from few samples is not the largest sample itself. The expected false-reject rate it implies is
estimated two ways: the empirical share of held-out scores above it, and a normal fit of s.
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

    def to_json(self) -> dict:
        return {"value": self.value, "quantile": self.quantile, "margin": self.margin, "n": self.n,
                "empirical_frr": self.empirical_frr, "normal_frr": self.normal_frr,
                "rule": "Q_q(heldout) + margin * (Q_q(heldout) - median(heldout))"}


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
    return Threshold(value=value, quantile=quantile, margin=margin, n=int(s.size),
                     empirical_frr=float((s > value).mean()), normal_frr=float(normal))
