"""Patch rows of channels-first features ([N, D, h, w], one row per image cell, image-major as
``features.transpose(0, 2, 3, 1).reshape(-1, D)`` numbers them) without transposing them all: a fit
that samples some patches reads each image's block once instead of copying every patch first
(on tiled golden sets the full copy is hundreds of MB)."""
from __future__ import annotations

import numpy as np


def patch_rows(features: np.ndarray, rows: np.ndarray, dtype=np.float32) -> np.ndarray:
    """features [N, D, h, w], rows int [R] (any order, image-major patch numbers) -> [R, D]
    of ``dtype``, row j the patch ``rows[j]``."""
    n, d, h, w = features.shape
    rows = np.asarray(rows, np.int64)
    img, cell = np.divmod(rows, h * w)
    order = np.argsort(img, kind="stable")
    bounds = np.searchsorted(img[order], np.arange(n + 1))
    out = np.empty((len(rows), d), dtype)
    for i in np.flatnonzero(np.diff(bounds)):
        at = order[bounds[i]:bounds[i + 1]]
        out[at] = features[i].reshape(d, h * w)[:, cell[at]].T
    return out
