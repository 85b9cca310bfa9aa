"""Scoring a labelled dataset (MVTec AD layout) and the metrics that say how well it went."""
from __future__ import annotations

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
