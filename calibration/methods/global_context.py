"""Fitting global context (inspector/methods/global_context.py): PatchCore's fit for the local
branch, a shrinkage Gaussian per pooled region for the global one, and the golden statistics
that put both in the same units (z) so the fusion weights mean the same on every part."""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from calibration.methods import Progress
from calibration.methods import patchcore as patchcore_fit
from calibration.methods import pose
from calibration.methods.aligned import fit_aligned, key_cells
from inspector.methods import global_context as gc
from inspector.methods import patchcore

log = logging.getLogger(__name__)
LARGE_KEY = 0.25  # a key region over this share of the inspected area is warned about


def ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:
    """x float64 [n, p] -> (the Ledoit-Wolf shrunk covariance [p, p], the shrinkage): the sample
    covariance pulled towards a scaled identity by the amount that minimises the expected error
    (Ledoit & Wolf 2004; the same estimate as scikit-learn's ledoit_wolf)."""
    n, p = x.shape
    xc = x - x.mean(axis=0)
    emp = xc.T @ xc / n
    mu = np.trace(emp) / p
    x2 = xc ** 2
    beta_ = (x2.T @ x2).sum()
    delta_ = (emp ** 2).sum()
    beta = (beta_ / n - delta_) / (p * n)
    delta = (delta_ - 2.0 * mu * np.trace(emp) + p * mu ** 2) / p
    beta = min(beta, delta)
    s = 0.0 if beta == 0 else beta / delta
    shrunk = (1.0 - s) * emp
    shrunk.flat[::p + 1] += s * mu
    return shrunk, float(s)


def gaussians(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x float64 [N, R, F] -> (mean [R, F], precision [R, F, F]) per region, Ledoit-Wolf shrunk."""
    mean = x.mean(axis=0)
    prec = np.empty((x.shape[1], x.shape[2], x.shape[2]), np.float64)
    for r in range(x.shape[1]):
        cov, _ = ledoit_wolf(x[:, r])
        cov.flat[::cov.shape[0] + 1] += 1e-9 * max(np.trace(cov) / len(cov), 1e-12)  # never singular
        prec[r] = np.linalg.inv(cov)
    return mean, prec


def group_ids(n: int, groups: Optional[np.ndarray]) -> np.ndarray:
    """int64 [n]: each row's group (0..G-1). groups: the original golden image of each row
    (augmented copies share their original's id; calibration/augment.py), or None: each row alone."""
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups has shape {groups.shape}, expected ({n},): one id per golden image")
    return np.unique(groups, return_inverse=True)[1].reshape(n)


def out_of_fold_distances(x: np.ndarray, folds: int, seed: int, groups: Optional[np.ndarray] = None) -> np.ndarray:
    """x float64 [N, R, F] -> each image's region distances float64 [N, R] under Gaussians fitted
    without its fold: held-in distances are too small (the Gaussian saw the image), and a z from
    them would call every new good part anomalous. groups (int [N]): folds are drawn over groups,
    so an image's augmented copies are held out with it (a copy in the fit is nearly the image)."""
    member = group_ids(len(x), groups)
    n = int(member.max()) + 1
    folds = min(folds, n)  # fit() asks for 3 images (groups), so each fold's Gaussian sees at least two
    order = np.random.default_rng(seed).permutation(n)
    out = np.empty(x.shape[:2], np.float64)
    for k in range(folds):
        out_now = np.isin(member, order[k::folds])
        held, rest = np.flatnonzero(out_now), np.flatnonzero(~out_now)
        mean, prec = gaussians(x[rest])
        out[held] = gc.mahalanobis(x[held], mean, prec)
    return out


def local_standardisation(features: np.ndarray, state: patchcore.State, n_images: int,
                          seed: int, groups: Optional[np.ndarray] = None) -> tuple[float, float]:
    """(mean, std) of golden images' PatchCore image scores with each image's own bank entries left
    out (the coreset picked the golden patches farthest from the rest, so held-in scores are all
    below its covering radius). At most ``n_images`` golden images, a seeded sample. groups (int
    [N]): the bank entries of an image's whole group (its augmented copies, its original) are
    left out together: a copy's patch is nearly the image's own.

    One search per image (and per member of its group) with the state's own searcher; a bank row
    is an image's own when one of its patches lies on it (distance ~0), and only the patches whose
    nearest row is one of the group's own are searched again without those rows."""
    n, d, h, w = features.shape
    member = group_ids(n, groups)
    pick = np.arange(n)
    if n > n_images:
        pick = np.sort(np.random.default_rng(seed).choice(n, n_images, replace=False))
    bank = state.memory_bank
    bank64 = bank.astype(np.float64)  # once, not per image: the bank can be large
    bank_sq = (bank64 * bank64).sum(1)
    own_rows: dict[int, np.ndarray] = {}  # only these (a few rows each) are kept between images

    def search(i: int):
        q = np.ascontiguousarray(features[i].reshape(d, -1).T, dtype=np.float32)
        dist, idx = state.searcher.search(q)
        # fp32 rounding leaves a copied patch ~1e-2 from its row, real neighbours are ~1e1 away
        own_rows[i] = np.unique(idx[dist <= 1e-3 * np.sqrt((q * q).sum(1)) + 1e-6])
        return q, dist, idx

    def own_of(j: int) -> np.ndarray:
        if j not in own_rows:
            search(j)
        return own_rows[j]

    scores = []
    for i in pick:
        q, dist, idx = search(int(i))
        own = np.unique(np.concatenate([own_of(int(j)) for j in np.flatnonzero(member == member[i])]))
        redo = np.flatnonzero(np.isin(idx, own))
        if len(redo) and len(own) < len(bank):
            qr = q[redo].astype(np.float64)
            d2 = (qr * qr).sum(1)[:, None] + bank_sq[None] - 2.0 * qr @ bank64.T
            d2[:, own] = np.inf  # the group's own rows left out
            dist = dist.astype(np.float64)
            dist[redo] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        scores.append(float(dist.max()))
    s = np.asarray(scores)
    return float(s.mean()), float(max(s.std(ddof=1) if len(s) > 1 else 0.0, 1e-6 * max(abs(s.mean()), 1e-6)))


def fit_global(features: np.ndarray, config: gc.GlobalConfig, seed: int, groups: Optional[np.ndarray] = None):
    """features float32 [N, D, h, w] -> (mean [R, F], precision [R, F, F], z stats [R, 2]), float32.
    groups: as out_of_fold_distances."""
    x = gc.pooled(features, gc.regions(features.shape[2:], config.grids))
    d = out_of_fold_distances(x, config.folds, seed, groups)
    z = np.stack([d.mean(axis=0), np.maximum(d.std(axis=0, ddof=1), 1e-6 * np.maximum(d.mean(axis=0), 1e-6))], 1)
    mean, prec = gaussians(x)
    return mean.astype(np.float32), prec.astype(np.float32), z.astype(np.float32)


def resolve_config(features: np.ndarray, config: gc.Config, seed: int,
                   groups: Optional[np.ndarray] = None, known_pose: Optional[gc.PoseDecision] = None,
                   content_hw: Optional[tuple[float, float]] = None) -> gc.Config:
    """``aligned_map: {enabled: auto}`` decided once on all the golden images (calibration calls
    this before its fits: the held-out split's fit, whose scores set the threshold, and the refit
    on all must score the same way), and its ``key_region`` put on the feature grid's cells
    (``content_hw``: the inspected area's extent in cells, the grid's padding beyond it; None: the
    whole grid, right for features without padding, as a fit called outside calibrate has); any
    other config unchanged. known_pose: the fixed-pose rule's answer on these features, if the
    caller has it (calibration/methods/pose.py resolve)."""
    a = config.global_context.aligned_map
    if a.enabled == "auto":
        a = pose.resolve(a, features, seed, group_ids(len(features), groups), known_pose)
    if a.key_region is not None and not a.enabled:
        log.warning("aligned_map.key_region is set but the aligned map is off (%s): the key is not used; "
                    "set aligned_map.enabled: true to use it", a.decision.reason if a.decision else "enabled: false")
        a = a.model_copy(update={"key_region": None})  # said once, not again by each fit's resolve
    elif a.key_region is not None and a.key_cells is None:
        y0, y1, x0, x1 = cells = key_cells(a.key_region, features.shape[2:], content_hw)
        share = (y1 - y0) * (x1 - x0) / (content_hw[0] * content_hw[1] if content_hw else np.prod(features.shape[2:]))
        if share > LARGE_KEY:
            log.warning("aligned_map.key_region covers %.0f%% of the inspected area: a key should hold only the mark "
                        "that names the variant (what must match it then picks the references again), and a large "
                        "one costs memory and time on every failing frame", 100 * share)
        a = a.model_copy(update={"key_cells": list(cells)})
    if a is config.global_context.aligned_map:
        return config
    return config.model_copy(update={"global_context": config.global_context.model_copy(update={"aligned_map": a})})


def assemble(local: patchcore.State, stats: tuple[float, float], glob, config: gc.Config,
             features_shape, aligned=None) -> gc.State:
    """The state from its fitted parts (the benchmark reuses one local fit across variants);
    ``aligned``: fit_aligned's (golden, (mean, basis), params), or None."""
    n, d, h, w = features_shape
    g = config.global_context
    params = gc.Params(local=local.params, smoothing_sigma=config.smoothing_sigma, grid_hw=[int(h), int(w)],
                       grids=list(g.grids), map_grids=list(g.map_grids), weight=g.weight, map_weight=g.map_weight, local_mean=stats[0],
                       local_std=stats[1], feature_dim=int(d), images_seen=int(n),
                       aligned=None if aligned is None else aligned[2], aligned_auto=g.aligned_map.decision,
                       map_guide_cells=g.map_guide_cells, map_guide_eps=g.map_guide_eps)
    golden, (mean, basis) = (None, (None, None)) if aligned is None else aligned[:2]
    return gc.State(params, local, *glob, golden, mean, basis)


def fit(features: np.ndarray, config: gc.Config, seed: int, progress: Progress,
        groups: Optional[np.ndarray] = None) -> gc.State:
    """features float32 [N, D, h, w] (N >= 3, or 3 groups) -> the state. groups: int [N], the
    original golden image of each row (augmented copies share it), from calibration; None: each
    row its own image. The out-of-fold Gaussians and the own-rows masking hold a group out whole."""
    member = group_ids(len(features), groups)
    originals = int(member.max()) + 1 if len(features) else 0
    if originals < 3:
        # with 2, each out-of-fold Gaussian would be fitted on one image (and its copies): a zero
        # (or a jitter-sized) covariance whose distances make every region z meaningless
        raise ValueError(f"global_context needs at least 3 golden images in each fit (got {originals}"
                         + (f" originals, {len(features)} with augmented copies" if len(features) != originals else "")
                         + "); add golden images or set scorer.method: patchcore")
    config = resolve_config(features, config, seed, member)  # still auto only when called outside calibrate
    local = patchcore_fit.fit(features, config.local(), seed, progress)
    g = config.global_context
    stats = local_standardisation(features, local, g.local_images, seed, member)
    near = fit_aligned(features, g.aligned_map, g.local_images, seed, member) if g.aligned_map.enabled else None
    return assemble(local, stats, fit_global(features, g, seed, member), config, features.shape, near)
