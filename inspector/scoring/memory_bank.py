"""Memory-bank scoring (PatchCore): each patch's distance to its nearest golden patch.

Bundle arrays: ``memory_bank`` float32 [M, D] (the coreset), and with reweighting
``bank_knn_index`` int32 [M, b] (each bank entry's b nearest bank neighbours).
"""
from __future__ import annotations

import numpy as np

from inspector.scoring.base import upsample_and_smooth
from inspector.types import ScoreMap


def nearest_distances(queries: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray,
                      chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean nearest neighbour of each query row in ``bank``.

    queries float32 [P, D], bank float32 [M, D], bank_sq = (bank**2).sum(1) [M].
    Returns (distance float32 [P], index int64 [P]). One GEMM per chunk: ||q||^2 - 2 q.b + ||b||^2.
    """
    dist = np.empty(len(queries), np.float32)
    idx = np.empty(len(queries), np.int64)
    for s in range(0, len(queries), chunk):
        q = queries[s:s + chunk]
        d2 = q @ bank.T
        d2 *= -2.0
        d2 += bank_sq[None, :]
        j = d2.argmin(axis=1)
        best = d2[np.arange(len(q)), j] + np.einsum("ij,ij->i", q, q)
        dist[s:s + chunk] = np.sqrt(np.maximum(best, 0.0))
        idx[s:s + chunk] = j
    return dist, idx


class MemoryBankScorer:
    family = "memory_bank"

    def __init__(self, bank: np.ndarray, *, smoothing_sigma: float = 4.0, feature_name: str = "features",
                 bank_knn_index: np.ndarray | None = None):
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)
        self.sigma = float(smoothing_sigma)
        self.feature_name = feature_name
        self.bank_knn_index = bank_knn_index

    @classmethod
    def from_bundle(cls, params: dict, arrays: dict[str, np.ndarray]) -> "MemoryBankScorer":
        knn = arrays.get("bank_knn_index") if params.get("reweight") else None
        return cls(arrays["memory_bank"], smoothing_sigma=params.get("smoothing_sigma", 4.0),
                   feature_name=params.get("feature_name", "features"), bank_knn_index=knn)

    def patch_scores(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """feats float32 [N, D, h, w] -> (patch distance maps [N, h, w], nn index [N, h*w], queries)."""
        n, d, h, w = feats.shape
        q = np.ascontiguousarray(feats.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)
        dist, idx = nearest_distances(q, self.bank, self.bank_sq)
        return dist.reshape(n, h, w), idx.reshape(n, h * w), q.reshape(n, h * w, d)

    def _reweighted(self, maps: np.ndarray, idx: np.ndarray, q: np.ndarray) -> np.ndarray:
        """PatchCore eq. 7: scale the max patch score by how isolated its nearest bank entry is."""
        scores = np.empty(len(maps), np.float32)
        for i in range(len(maps)):
            flat = maps[i].ravel()
            p = int(flat.argmax())
            nn = int(idx[i, p])
            neigh = self.bank[np.concatenate([[nn], self.bank_knn_index[nn]])]
            dists = np.sqrt(np.maximum(((neigh - q[i, p]) ** 2).sum(1), 0.0))
            # softmax-style weight, stabilised by subtracting the max exponent
            e = np.exp(dists - dists.max())
            weight = 1.0 - e[0] / e.sum()
            scores[i] = weight * flat[p]
        return scores

    def score(self, features: dict[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
        maps, idx, q = self.patch_scores(features[self.feature_name])
        if self.bank_knn_index is not None:
            image_scores = self._reweighted(maps, idx, q)
        else:
            image_scores = maps.reshape(len(maps), -1).max(axis=1)
        return ScoreMap(image_scores.astype(np.float32), upsample_and_smooth(maps, input_hw, self.sigma))
