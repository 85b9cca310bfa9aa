"""Fitting PaDiM (inspector/methods/padim.py): per-position mean and regularised inverse
covariance of a seeded random channel subset of the golden patch features."""
from __future__ import annotations

import numpy as np

from calibration.methods import Progress
from inspector.methods import padim


def channels(d: int, n_channels, seed: int) -> np.ndarray:
    """int64 [k]: the seeded random channel subset (all ``d`` when n_channels is None or >= d)."""
    if n_channels is None or n_channels >= d:
        return np.arange(d, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(d, size=n_channels, replace=False)).astype(np.int64)


def fit(features: np.ndarray, config: padim.Config, seed: int, progress: Progress) -> padim.State:
    """features float32 [N, D, h, w] -> the state (Gaussians in float64, stored float32)."""
    n, d_all, h, w = features.shape
    ch = channels(d_all, config.padim.n_channels, seed)
    d = len(ch)
    x = features[:, ch].reshape(n, d, h * w).transpose(2, 0, 1).astype(np.float64)  # [hw, N, d]
    mean = x.mean(axis=1)  # [hw, d]
    eye = np.eye(d) * config.padim.eps
    inv = np.empty((h * w, d, d), np.float32)
    step = 128
    progress.total((h * w + step - 1) // step)
    for s in range(0, h * w, step):
        xc = x[s:s + step] - mean[s:s + step, None, :]
        cov = np.matmul(xc.transpose(0, 2, 1), xc) / max(n - 1, 1) + eye
        inv[s:s + step] = np.linalg.inv(cov).astype(np.float32)
        progress.update(1)
    params = padim.Params(smoothing_sigma=config.smoothing_sigma, grid_hw=[int(h), int(w)], n_channels=int(d),
                          eps=config.padim.eps, feature_dim=int(d_all), images_seen=int(n))
    return padim.State(params, ch, mean.astype(np.float32), inv)
