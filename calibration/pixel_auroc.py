"""Pixel AUROC at the frame's own resolution: each test image's anomaly map is mapped back to the
frame and compared pixel by pixel with its ground-truth mask there, so no defect, however thin,
is lost to a resize of the mask.

Exact rank-sum AUROC over every pixel of a test set needs a sort of tens of millions of values
(mvtec_bottle: 83 frames of 900x900 = 67M); instead the scores are counted in 2^16 equal bins
between the smallest and largest score of the set, for defect and normal pixels apart. Pairs
in different bins are ordered exactly; only pairs sharing a bin count as ties, so the binned
value differs from the exact one by at most half their share, which is computed and reported
(``error_bound``; below 1e-4 on the real datasets and in the tests)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import cv2
import numpy as np

from inspector.preprocess import map_to_original
from inspector.types import RoiTransform

BINS = 1 << 16


@dataclass(frozen=True)
class FrameMask:
    """A ground-truth mask at the frame's resolution, or why there is none to use."""

    mask: Optional[np.ndarray]  # bool [H, W]
    problem: Optional[str] = None
    resized: bool = False


def load_mask_at_frame(path: Optional[Path], frame_hw: tuple[int, int]) -> FrameMask:
    """A defect image's mask as bool at ``frame_hw``. A mask of another size is resized so that no
    defect pixel is lost (area-weighted when shrinking: any covered pixel stays set)."""
    if path is None:
        return FrameMask(None, "no mask file")
    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        return FrameMask(None, "mask unreadable")
    resized = m.shape != tuple(frame_hw)
    if resized:
        h, w = frame_hw
        shrinks = h < m.shape[0] or w < m.shape[1]
        m = cv2.resize((m > 0).astype(np.uint8) * 255, (w, h),
                       interpolation=cv2.INTER_AREA if shrinks else cv2.INTER_NEAREST)
    mask = m > 0
    if not mask.any():
        return FrameMask(None, "mask is empty", resized)
    return FrameMask(mask, None, resized)


def binned_auroc(pos_hist: np.ndarray, neg_hist: np.ndarray) -> tuple[float, float]:
    """AUROC from score histograms over the same ascending bins (defect, normal), ties within a bin
    counted half; and the most it can differ from the exact AUROC. NaN if a class is empty."""
    pos = np.asarray(pos_hist, np.float64)
    neg = np.asarray(neg_hist, np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    neg_below = np.cumsum(neg) - neg
    pairs = n_pos * n_neg
    value = float((pos * (neg_below + 0.5 * neg)).sum() / pairs)
    return value, float(0.5 * (pos * neg).sum() / pairs)


@dataclass(frozen=True)
class PixelAurocResult:
    auroc: Optional[float]
    error_bound: Optional[float]
    defect_pixels: int
    pixels: int


class FramePixelAuroc:
    """Collects maps (network-input coordinates, with their RoiTransform) and masks at frame
    resolution, grouped by defect type ("good" for good images), and gives pixel AUROC over all
    of them or over good + some types. Maps are kept at input size until the result is asked
    for, since the bins' range is the whole set's."""

    def __init__(self, bins: int = BINS):
        self.bins = bins
        self._items: list[tuple[str, np.ndarray, RoiTransform, Optional[np.ndarray]]] = []
        self._hists: Optional[dict[str, tuple[np.ndarray, np.ndarray]]] = None

    def add(self, group: str, pixel_map: np.ndarray, transform: RoiTransform, mask: Optional[np.ndarray]) -> None:
        """mask: bool at (transform.original_h, original_w), or None for an image with no defect."""
        if mask is not None and mask.shape != (transform.original_h, transform.original_w):
            raise ValueError(f"mask {mask.shape} is not at the frame's size "
                             f"{(transform.original_h, transform.original_w)}")
        packed = None if mask is None else np.packbits(mask, axis=None)
        self._items.append((group, np.array(pixel_map, np.float32), transform, packed))  # a copy, not a view
        self._hists = None

    def _histograms(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        if self._hists is not None:
            return self._hists
        # bilinear upsampling stays within each map's range; pixels outside the ROI are 0
        lo = min(float(m.min()) for _, m, _, _ in self._items)
        hi = max(float(m.max()) for _, m, _, _ in self._items)
        if any((t.roi_w, t.roi_h) != (t.original_w, t.original_h) for _, _, t, _ in self._items):
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = (self.bins / (hi - lo)) if hi > lo else 0.0
        hists: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for group, pmap, tr, packed in self._items:
            full = map_to_original(pmap, tr).ravel()
            idx = np.clip(((full - lo) * scale).astype(np.int64), 0, self.bins - 1)
            pos, neg = hists.setdefault(group, (np.zeros(self.bins, np.int64), np.zeros(self.bins, np.int64)))
            if packed is None:
                neg += np.bincount(idx, minlength=self.bins)
            else:
                gt = np.unpackbits(packed, count=full.size).astype(bool)
                pos += np.bincount(idx[gt], minlength=self.bins)
                neg += np.bincount(idx[~gt], minlength=self.bins)
        self._hists = hists
        return hists

    def result(self, types: Optional[Iterable[str]] = None) -> PixelAurocResult:
        """Pixel AUROC over every image, or over the good ones and those of ``types``."""
        if not self._items:
            return PixelAurocResult(None, None, 0, 0)
        hists = self._histograms()
        wanted = None if types is None else {"good", *types}
        groups = [g for g in hists if wanted is None or g in wanted]
        pos = sum((hists[g][0] for g in groups), np.zeros(self.bins, np.int64))
        neg = sum((hists[g][1] for g in groups), np.zeros(self.bins, np.int64))
        value, bound = binned_auroc(pos, neg)
        n_pos = int(pos.sum())
        ok = n_pos > 0 and neg.sum() > 0
        return PixelAurocResult(value if ok else None, bound if ok else None, n_pos, n_pos + int(neg.sum()))
