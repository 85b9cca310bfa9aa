"""Fitter for PaDiM (memory_bank / padim): per-position mean and regularised inverse covariance
of a seeded random channel subset of the golden patch features."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np


class PadimFitter:
    """Fits ``inspector.scoring.padim.PadimScorer`` arrays from features float32 [N, D, h, w]."""

    scorer_type = "memory_bank"

    def __init__(self, config, seed: int = 0):
        self.config = config  # settings.MemoryBankScorerConfig with method padim
        self.seed = seed

    def channels(self, d: int) -> np.ndarray:
        k = self.config.padim.n_channels
        if k is None or k >= d:
            return np.arange(d, dtype=np.int64)
        return np.sort(np.random.default_rng(self.seed).choice(d, size=k, replace=False)).astype(np.int64)

    def fit(self, features: np.ndarray, progress: Optional[Callable[[int], None]] = None,
            total: Optional[Callable[[int], None]] = None) -> tuple[dict, dict[str, np.ndarray]]:
        n, d_all, h, w = features.shape
        ch = self.channels(d_all)
        d = len(ch)
        x = features[:, ch].reshape(n, d, h * w).transpose(2, 0, 1).astype(np.float64)  # [hw, N, d]
        mean = x.mean(axis=1)  # [hw, d]
        eye = np.eye(d) * self.config.padim.eps
        inv = np.empty((h * w, d, d), np.float32)
        step = 128
        if total:
            total((h * w + step - 1) // step)
        for s in range(0, h * w, step):
            xc = x[s:s + step] - mean[s:s + step, None, :]
            cov = np.matmul(xc.transpose(0, 2, 1), xc) / max(n - 1, 1) + eye
            inv[s:s + step] = np.linalg.inv(cov).astype(np.float32)
            if progress:
                progress(1)
        params = {"method": "padim", "smoothing_sigma": self.config.smoothing_sigma, "feature_name": "features",
                  "grid_hw": [int(h), int(w)], "n_channels": int(d), "eps": self.config.padim.eps,
                  "feature_dim": int(d_all), "images_seen": int(n)}
        arrays = {"padim_channels": ch, "padim_mean": mean.astype(np.float32), "padim_inv_cov": inv}
        return params, arrays
