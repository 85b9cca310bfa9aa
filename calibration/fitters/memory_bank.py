"""Fitter for the memory-bank scorer (PatchCore): golden patch features -> coreset bank."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from calibration.fitters.coreset import bank_neighbours, coreset_size, greedy_coreset


class CoresetFitter:
    """Fits ``inspector.scoring.memory_bank.MemoryBankScorer`` arrays from features [N, D, h, w]."""

    scorer_type = "memory_bank"

    def __init__(self, config, seed: int = 0):
        self.config = config  # settings.MemoryBankScorerConfig
        self.seed = seed

    def fit(self, features: np.ndarray, progress: Optional[Callable[[int], None]] = None,
            total: Optional[Callable[[int], None]] = None) -> tuple[dict, dict[str, np.ndarray]]:
        n, d, h, w = features.shape
        patches = np.ascontiguousarray(features.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)
        c = self.config.coreset
        k = coreset_size(len(patches), size=c.size, ratio=c.ratio, max_size=c.max_size)
        if total:
            total(k)
        candidates = np.arange(len(patches))
        if c.max_candidates is not None and len(patches) > c.max_candidates:
            rng = np.random.default_rng(self.seed)
            candidates = np.sort(rng.choice(len(patches), c.max_candidates, replace=False))
        picks = greedy_coreset(patches[candidates] if len(candidates) < len(patches) else patches, k,
                               projection_dim=c.projection_dim, seed=self.seed, progress=progress)
        bank = patches[candidates[picks]]
        arrays = {"memory_bank": bank}
        params = {"method": self.config.method, "smoothing_sigma": self.config.smoothing_sigma,
                  "reweight": self.config.reweight, "feature_name": "features", "bank_size": int(len(bank)),
                  "patches_seen": int(len(patches)), "coreset_candidates": int(len(candidates)),
                  "feature_dim": int(d)}
        if self.config.reweight:
            arrays["bank_knn_index"] = bank_neighbours(bank, min(self.config.reweight_neighbours, len(bank) - 1))
        return params, arrays
