"""Fitting the aligned-neighbour map (inspector/methods/aligned.py) of global_context: which golden
images the bundle keeps, and the golden statistics that put its distances in z-units."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from calibration.methods.patches import patch_rows
from inspector.methods import aligned
from inspector.methods import global_context as gc

log = logging.getLogger(__name__)


def farthest_images(layouts: np.ndarray, m: int) -> np.ndarray:
    """Indices of ``m`` images picked by k-center on their layouts (from the one nearest the
    mean, then each time the one farthest from those picked), sorted: every golden variant keeps
    a near neighbour when the bundle cannot hold all of them."""
    x = layouts.astype(np.float64)
    if len(x) <= m:
        return np.arange(len(x))
    first = int(((x - x.mean(0)) ** 2).sum(1).argmin())
    picks, dmin = [first], ((x - x[first]) ** 2).sum(1)
    while len(picks) < m:
        nxt = int(dmin.argmax())
        picks.append(nxt)
        dmin = np.minimum(dmin, ((x - x[nxt]) ** 2).sum(1))
    return np.sort(np.asarray(picks))


def pca_basis(features: np.ndarray, dims: int, seed: int, sample: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """(mean float32 [D], the top ``dims`` principal directions float32 [D, dims]) of a seeded
    sample of at most ``sample`` golden patches."""
    n, d, h, w = features.shape
    rng = np.random.default_rng(seed)
    total = n * h * w
    rows = rng.choice(total, min(sample, total), replace=False)
    x = patch_rows(features, rows, np.float64)  # [rows, D], no copy of all patches
    mean = x.mean(axis=0)
    xc = x - mean
    _, vecs = np.linalg.eigh(xc.T @ xc / max(len(xc) - 1, 1))  # ascending eigenvalues
    return mean.astype(np.float32), np.ascontiguousarray(vecs[:, ::-1][:, :dims], np.float32)


def fit_aligned(features: np.ndarray, config: gc.AlignedConfig, n_images: int, seed: int,
                member: Optional[np.ndarray] = None):
    """features float32 [N, D, h, w] -> (the kept golden features float16 [M, K, h, w], the
    projection (mean [D], basis [D, K]) or (None, None) when ``config.dims`` keeps all D, params
    with the mean and std of golden images' map maxima, each image scored without itself:
    held-in, its own patches would be at distance 0). member: int [N], each row's original golden
    image (augmented copies share it; None: each row its own): a golden image is scored without its
    whole group."""
    mean = basis = None
    if config.dims is not None and config.dims < features.shape[1]:
        mean, basis = pca_basis(features, config.dims, seed)
        features = aligned.project(features, mean, basis)
    boxes = gc.regions(features.shape[2:], [4])
    lay = aligned.layouts(features, boxes)
    keep = farthest_images(lay, config.images)
    golden = features[keep].astype(np.float16)
    n = len(features)
    pick = np.arange(n) if n <= n_images else np.sort(np.random.default_rng(seed).choice(n, n_images, replace=False))
    member = np.arange(n) if member is None else np.asarray(member)
    own = member[pick][:, None] == member[keep][None]  # [picked, kept]: the same original image

    def golden_stats(feats: np.ndarray, refs: np.ndarray, refs_layouts: np.ndarray) -> tuple[float, float]:
        # the picked golden images against the kept ones, each without its own group
        return maxima_stats(aligned.aligned_maps(feats[pick], refs, refs_layouts, boxes, config.k, config.radius,
                                                 exclude=own))

    # the golden statistics are the whole layout's references' (the image term's; trim changes the map only)
    z_mean, z_std = golden_stats(features, golden, lay[keep])
    coarse = config.coarse_dims if basis is not None and config.coarse_dims < basis.shape[1] else 0
    if config.coarse_dims and not coarse:
        log.info("aligned map: coarse_dims %d left off: it needs more principal directions than it (dims %s)",
                 config.coarse_dims, None if basis is None else basis.shape[1])
    c_mean, c_std = 0.0, 1.0
    if coarse:  # the coarse map's own z-units, on the first ``coarse`` directions alone
        sub = np.ascontiguousarray(features[:, :coarse])
        c_mean, c_std = golden_stats(sub, golden[:, :coarse], aligned.layouts(sub[keep], boxes))
    return golden, (mean, basis), gc.AlignedParams(k=config.k, radius=config.radius, trim=config.trim,
                                                   fusion=config.fusion,
                                                   dims=None if basis is None else int(basis.shape[1]),
                                                   mean=z_mean, std=z_std, image_weight=config.image_weight,
                                                   coarse_dims=coarse, coarse_mean=c_mean, coarse_std=c_std,
                                                   coarse_weight=config.coarse_weight, key_cells=config.key_cells)


def key_cells(region, grid_hw, content_hw: Optional[tuple[float, float]] = None) -> tuple[int, int, int, int]:
    """A key region [x0, y0, x1, y1] (fractions of the inspected area, ``content_hw`` cells of the
    ``grid_hw`` feature grid, the rest padding; None: the whole grid) -> (y0, y1, x0, x1) cells,
    every cell it touches, at least one."""
    h, w = grid_hw
    ch, cw = content_hw if content_hw is not None else (h, w)
    x0, y0, x1, y1 = region

    def span(a: float, b: float, extent: float, size: int) -> tuple[int, int]:
        # a boundary that lands on a cell edge (0.29 x 100 = 28.999...) does not take in the cell beside it
        lo = min(int(np.floor(a * extent + 1e-9)), size - 1)
        return lo, max(lo + 1, min(int(np.ceil(b * extent - 1e-9)), size))

    (top, bottom), (left, right) = span(y0, y1, ch, h), span(x0, x1, cw, w)
    return top, bottom, left, right


def maxima_stats(maps: np.ndarray) -> tuple[float, float]:
    """Mean and std (floored above 0) of golden images' aligned-map maxima, maps [N, h, w]."""
    top = maps.reshape(len(maps), -1).max(axis=1).astype(np.float64)
    std = max(float(top.std(ddof=1)) if len(top) > 1 else 0.0, 1e-6 * max(abs(float(top.mean())), 1e-6))
    return float(top.mean()), std
