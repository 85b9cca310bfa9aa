"""Fitting PatchCore (inspector/methods/patchcore.py): golden patch features -> coreset memory bank."""
from __future__ import annotations

import numpy as np

from calibration.methods import Progress
from calibration.methods.coreset import bank_neighbours, coreset_size, greedy_coreset
from calibration.methods.patches import patch_rows
from inspector.methods import patchcore


def fit(features: np.ndarray, config: patchcore.Config, seed: int, progress: Progress) -> patchcore.State:
    """features float32 [N, D, h, w] -> the state: a k-center coreset of the patches (picked among
    at most coreset.max_candidates of them), with reweight each entry's nearest bank entries."""
    n, d, h, w = features.shape
    seen = n * h * w
    c = config.coreset
    k = coreset_size(seen, size=c.size, ratio=c.ratio, max_size=c.max_size)
    progress.total(k)
    if c.max_candidates is not None and seen > c.max_candidates:
        rng = np.random.default_rng(seed)
        candidates = patch_rows(features, np.sort(rng.choice(seen, c.max_candidates, replace=False)))
    else:
        candidates = np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)
    picks = greedy_coreset(candidates, k, projection_dim=c.projection_dim, seed=seed, progress=progress.update)
    bank = candidates[picks]
    knn = bank_neighbours(bank, min(config.reweight_neighbours, len(bank) - 1)) if config.reweight else None
    params = patchcore.Params(smoothing_sigma=config.smoothing_sigma, reweight=config.reweight,
                              bank_size=int(len(bank)), patches_seen=int(seen),
                              coreset_candidates=int(len(candidates)), feature_dim=int(d))
    return patchcore.State(params, bank, knn)
