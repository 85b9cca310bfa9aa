"""Scoring a feature cache (benchmarks/feature_cache.py) with a fitted method, for the issue-16
benchmarks: image AUROC, escape rate at 1% false rejects (threshold from the test good images),
pixel AUROC (maps and masks at the work image's content, pixels pooled, 2x2-average downsampled
to keep it cheap), and the scoring cost per frame."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from calibration.evaluation import auroc, operating_point, threshold_at_frr

FRR = 0.01


def load_cache(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def score_in_batches(scorer, feats: np.ndarray, work_hw, batch: int = 16):
    """(image scores [M], pixel maps [M, H, W] or None, ms per frame of scoring)."""
    scores, maps, spent = [], [], 0.0
    for s in range(0, len(feats), batch):
        x = {"features": np.ascontiguousarray(feats[s:s + batch], np.float32)}
        t0 = time.perf_counter()
        sm = scorer(x, tuple(int(v) for v in work_hw))
        spent += time.perf_counter() - t0
        scores.append(sm.image_scores)
        if sm.patch_maps is not None:
            maps.append(sm.pixel_maps)
    return np.concatenate(scores), (np.concatenate(maps) if maps else None), 1000 * spent / len(feats)


def _pixel_auroc(maps: np.ndarray, masks: np.ndarray, content_hw) -> Optional[float]:
    h, w = (int(v) for v in content_hw)
    m = maps[:, :h, :w]
    g = masks[:, :h, :w] > 0
    small = np.stack([cv2.resize(x, (w // 2, h // 2), interpolation=cv2.INTER_AREA) for x in m])
    gsmall = np.stack([cv2.resize(x.astype(np.uint8), (w // 2, h // 2), interpolation=cv2.INTER_NEAREST) for x in g])
    if not gsmall.any():
        return None
    return auroc(gsmall.ravel(), small.ravel())


def metrics(scores: np.ndarray, maps: Optional[np.ndarray], cache: dict, rows: np.ndarray) -> dict:
    """Metrics over test rows ``rows`` (good ones and the defects to judge)."""
    labels = cache["labels"][rows].astype(int)
    s = scores[rows]
    thr = threshold_at_frr(s[labels == 0], FRR)
    op = operating_point(s[labels == 0], s[labels == 1], thr)
    out = {"images": int(len(rows)), "defects": int(labels.sum()), "image_auroc": round(auroc(labels, s), 4),
           "escape_rate_at_1pct_frr": op["escape_rate"]}
    if maps is not None:
        masked = rows[(labels == 0) | cache["has_mask"][rows]]
        px = _pixel_auroc(maps[masked], cache["masks"][masked], cache["content_hw"])
        out["pixel_auroc"] = None if px is None else round(px, 4)
    return out


def timed(fn: Callable):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
