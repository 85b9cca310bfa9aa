"""PaDiM scoring (Defard et al. 2021): a multivariate Gaussian of the patch features at every
patch position; a patch's score is its Mahalanobis distance to its position's Gaussian.

Bundle arrays: ``padim_channels`` int64 [d] (the random channel subset), ``padim_mean`` float32
[h*w, d], ``padim_inv_cov`` float32 [h*w, d, d] (inverse of cov + eps*I). The method assumes
aligned parts: the position grid is fixed by the network input size at calibration.
"""
from __future__ import annotations

import numpy as np

from inspector.scoring.base import ScoreMap, score_patch_maps


class PadimScorer:
    family = "memory_bank"

    def __init__(self, channels: np.ndarray, mean: np.ndarray, inv_cov: np.ndarray, grid_hw: tuple[int, int], *,
                 smoothing_sigma: float = 4.0, feature_name: str = "features"):
        self.channels = np.asarray(channels, dtype=np.int64)
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.inv_cov = np.ascontiguousarray(inv_cov, dtype=np.float32)
        self.grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
        self.sigma = float(smoothing_sigma)
        self.feature_name = feature_name

    @classmethod
    def from_bundle(cls, params: dict, arrays: dict[str, np.ndarray]) -> "PadimScorer":
        return cls(arrays["padim_channels"], arrays["padim_mean"], arrays["padim_inv_cov"], tuple(params["grid_hw"]),
                   smoothing_sigma=params.get("smoothing_sigma", 4.0), feature_name=params.get("feature_name", "features"))

    def patch_scores(self, feats: np.ndarray) -> np.ndarray:
        """feats float32 [N, D, h, w] -> Mahalanobis distance maps float32 [N, h, w]."""
        n, _, h, w = feats.shape
        if (h, w) != self.grid_hw:
            raise ValueError(f"PaDiM bundle has a {self.grid_hw[0]}x{self.grid_hw[1]} patch grid, the features are "
                             f"{h}x{w}: the network input size differs from calibration; recalibrate")
        x = feats[:, self.channels].reshape(n, len(self.channels), h * w).transpose(2, 0, 1)  # [hw, N, d]
        diff = x.astype(np.float32) - self.mean[:, None, :]
        m = np.matmul(diff, self.inv_cov)  # [hw, N, d]: one small GEMM per position
        d2 = np.einsum("knd,knd->kn", m, diff)
        return np.sqrt(np.maximum(d2, 0.0)).T.reshape(n, h, w).astype(np.float32)

    def score(self, features: dict[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
        return score_patch_maps(self.patch_scores(features[self.feature_name]), input_hw, self.sigma)
