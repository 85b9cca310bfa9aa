"""Scoring a labelled dataset (MVTec AD layout) and the metrics that say how well it went."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from calibration.golden import IMAGE_SUFFIXES


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) identity, ties averaged.
    labels: 0 good / 1 anomalous; scores: higher = more anomalous. NaN if one class is missing."""
    labels = np.asarray(labels).astype(bool).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s), np.float64)
    # average rank over runs of equal scores
    boundaries = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(s)]])
    avg = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks[order] = np.repeat(avg, ends - starts)
    rank_sum = ranks[labels].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


# -- operating points --------------------------------------------------------------------------
# A part is rejected when its score is above the threshold (the judge's rule), so a defective
# part scored at or below it escapes.

def threshold_at_frr(good_scores, max_frr: float) -> float:
    """The smallest threshold at which at most ``max_frr`` (a share, 0.01 = 1%) of the good scores
    are above it: with n good scores, k = floor(max_frr * n) of them may be rejected, and the
    threshold is the (k+1)-th largest good score. With 20 good images 0.5% allows no reject at all
    (k = 0: the largest good score); ties can make the false-reject rate it achieves lower."""
    good = np.sort(np.asarray(good_scores, np.float64).ravel())[::-1]
    if not 0.0 <= max_frr < 1.0:
        raise ValueError(f"false-reject rate {max_frr} is not a share in [0, 1)")
    if good.size == 0:
        raise ValueError("no good scores to set a threshold from")
    k = math.floor(max_frr * good.size + 1e-9)  # + 1e-9: 0.29 * 100 is 28.999... in floating point
    return float(good[k])


def operating_point(good_scores, defect_scores, threshold: float) -> dict:
    """Counts and rates at one threshold: false rejects among the good images (score above it) and
    escapes among the defective ones (score at or below it)."""
    good = np.asarray(good_scores, np.float64).ravel()
    bad = np.asarray(defect_scores, np.float64).ravel()
    rejects = int((good > threshold).sum())
    escapes = int((bad <= threshold).sum())
    return {"threshold": float(threshold),
            "false_rejects": rejects, "good_images": int(good.size),
            "false_reject_rate": round(rejects / good.size, 4) if good.size else None,
            "escapes": escapes, "defective_images": int(bad.size),
            "escape_rate": round(escapes / bad.size, 4) if bad.size else None}


@dataclass(frozen=True)
class TestImage:
    path: Path
    defect: str  # "good" or the defect type
    mask: Optional[Path]

    @property
    def label(self) -> int:
        return 0 if self.defect == "good" else 1


def mvtec_test_set(root: Path) -> list[TestImage]:
    """Every image under root/test/<type>/, with its ground-truth mask where one exists."""
    items = []
    test = root / "test"
    if not test.is_dir():
        raise FileNotFoundError(f"{test} not found: expected the MVTec layout train/good, test/<type>, ground_truth/<type>")
    for kind_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        for img in sorted(p for p in kind_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            mask = None
            if kind_dir.name != "good":
                for cand in (root / "ground_truth" / kind_dir.name).glob(f"{img.stem}_mask.*"):
                    mask = cand
                    break
            items.append(TestImage(img, kind_dir.name, mask))
    return items


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": float("nan"), "p95": float("nan"), "mean": float("nan")}
    a = np.asarray(values, dtype=np.float64)
    return {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "mean": round(float(a.mean()), 3)}
