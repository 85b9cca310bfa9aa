"""Memory-bank scoring (PatchCore): each patch's distance to its nearest golden patch.

Bundle arrays: ``memory_bank`` float32 [M, D] (the coreset), and with reweighting
``bank_knn_index`` int32 [M, b] (each bank entry's b nearest bank neighbours).
"""
from __future__ import annotations

import numpy as np

from inspector.scoring.base import ScoreMap, score_patch_maps


def augmented_bank(bank: np.ndarray, bank_sq: np.ndarray) -> np.ndarray:
    """float32 [D + 1, M]: rows -2 * bank.T, then bank_sq. ``[q, 1] @ this`` gives
    ||b||^2 - 2 q.b for every bank row in the GEMM itself (see nearest_distances)."""
    m, d = bank.shape
    aug = np.empty((d + 1, m), np.float32)
    aug[:d] = -2.0 * bank.T
    aug[d] = bank_sq
    return aug


def nearest_distances(queries: np.ndarray, bank: np.ndarray, bank_sq: np.ndarray,
                      chunk: int = 4096, augmented: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean nearest neighbour of each query row in ``bank``.

    queries float32 [P, D], bank float32 [M, D], bank_sq = (bank**2).sum(1) [M];
    augmented: augmented_bank(bank, bank_sq), precomputed by a caller that searches the same bank
    often (the scorer). Returns (distance float32 [P], index int64 [P]).

    ||q - b||^2 = ||q||^2 + (||b||^2 - 2 q.b); the bracket comes out of one GEMM with the
    queries augmented by a column of ones, so no pass over the [P, M] matrix is spent on scaling
    and adding (the GEMM is ~85% of the time: at P=1024, M=4000, D=152 one core does it at
    ~140 GFLOPS; the old multiply + add passes cost ~1.5 ms more per frame of ~12 ms).
    """
    queries = np.asarray(queries, dtype=np.float32)
    if augmented is None:
        augmented = augmented_bank(np.asarray(bank, np.float32), np.asarray(bank_sq, np.float32))
    n, d = queries.shape
    dist = np.empty(n, np.float32)
    idx = np.empty(n, np.int64)
    for s in range(0, n, chunk):
        q = queries[s:s + chunk]
        qa = np.empty((len(q), d + 1), np.float32)
        qa[:, :d] = q
        qa[:, d] = 1.0
        d2 = qa @ augmented  # [c, M]: ||b||^2 - 2 q.b
        j = d2.argmin(axis=1)
        best = d2[np.arange(len(q)), j] + np.einsum("ij,ij->i", q, q)
        dist[s:s + chunk] = np.sqrt(np.maximum(best, 0.0))
        idx[s:s + chunk] = j
    return dist, idx


class MemoryBankScorer:
    family = "memory_bank"

    def __init__(self, bank: np.ndarray, *, smoothing_sigma: float = 4.0, feature_name: str = "features",
                 bank_knn_index: np.ndarray | None = None, search: str = "fp32"):
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self.bank_sq = np.einsum("ij,ij->i", self.bank, self.bank)
        self.sigma = float(smoothing_sigma)
        self.feature_name = feature_name
        self.bank_knn_index = bank_knn_index
        self.set_search_precision(search)

    def set_search_precision(self, precision: str) -> None:
        """"bf16": the bf16 GEMM shortlist + exact fp32 distance (inspector/scoring/knn_bf16.py),
        for bundles calibrated on a bf16 engine; anything else: the exact fp32 search. Only the
        chosen search's precomputed bank is kept."""
        self._bf16 = None  # Bf16NearestSearch
        self._augmented = None  # augmented_bank(), for the exact search
        if precision == "bf16":
            from inspector.scoring.knn_bf16 import Bf16NearestSearch

            self._bf16 = Bf16NearestSearch(self.bank)
        else:
            self._augmented = augmented_bank(self.bank, self.bank_sq)

    @property
    def search_precision(self) -> str:
        return "fp32" if self._bf16 is None else "bf16"

    @classmethod
    def from_bundle(cls, params: dict, arrays: dict[str, np.ndarray]) -> "MemoryBankScorer":
        knn = arrays.get("bank_knn_index") if params.get("reweight") else None
        # search: how calibration searched (calibration/calibrate.py); bundles without it search exactly
        return cls(arrays["memory_bank"], smoothing_sigma=params.get("smoothing_sigma", 4.0),
                   feature_name=params.get("feature_name", "features"), bank_knn_index=knn,
                   search=params.get("search", "fp32"))

    def nearest(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """queries float32 [P, D] -> (distance to the nearest bank row [P], its index [P])."""
        if self._bf16 is not None:
            return self._bf16.search(queries)
        return nearest_distances(queries, self.bank, self.bank_sq, augmented=self._augmented)

    def patch_scores(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """feats float32 [N, D, h, w] -> (patch distance maps [N, h, w], nn index [N, h*w], queries)."""
        n, d, h, w = feats.shape
        q = np.ascontiguousarray(feats.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)
        dist, idx = self.nearest(q)
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
        image_scores = self._reweighted(maps, idx, q) if self.bank_knn_index is not None else None
        return score_patch_maps(maps, input_hw, self.sigma, image_scores)
