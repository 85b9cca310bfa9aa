"""Fitting PatchCore (inspector/methods/patchcore.py): golden patch features -> coreset memory bank."""
from __future__ import annotations

import numpy as np

from calibration.methods import Progress
from calibration.methods.coreset import bank_neighbours, coreset_size, greedy_coreset
from inspector.methods import patchcore


def fit(features: np.ndarray, config: patchcore.Config, seed: int, progress: Progress) -> patchcore.State:
    """features float32 [N, D, h, w] -> the state: a k-center coreset of the patches (picked among
    at most coreset.max_candidates of them), with reweight each entry's nearest bank entries."""
    n, d, h, w = features.shape
    patches = np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)
    c = config.coreset
    k = coreset_size(len(patches), size=c.size, ratio=c.ratio, max_size=c.max_size)
    progress.total(k)
    candidates = np.arange(len(patches))
    if c.max_candidates is not None and len(patches) > c.max_candidates:
        rng = np.random.default_rng(seed)
        candidates = np.sort(rng.choice(len(patches), c.max_candidates, replace=False))
    picks = greedy_coreset(patches[candidates] if len(candidates) < len(patches) else patches, k,
                           projection_dim=c.projection_dim, seed=seed, progress=progress.update)
    bank = patches[candidates[picks]]
    knn = bank_neighbours(bank, min(config.reweight_neighbours, len(bank) - 1)) if config.reweight else None
    params = patchcore.Params(smoothing_sigma=config.smoothing_sigma, reweight=config.reweight,
                              bank_size=int(len(bank)), patches_seen=int(len(patches)),
                              coreset_candidates=int(len(candidates)), feature_dim=int(d))
    return patchcore.State(params, bank, knn)
