"""Nearest-golden-patch search as objects a method holds (PatchCore's memory bank).

A searcher is built once per bank and answers ``search(queries float32 [P, D]) -> (distance
float32 [P], index int64 [P])``: the Euclidean distance to the nearest bank row and that row.
Which one a bundle uses is recorded at calibration in its params (``search``), so thresholds
are always used with the search they were set with:

- ``fp32`` (``ExactSearch``): one augmented fp32 GEMM per chunk, exact;
- ``bf16`` (``knn_bf16.Bf16ShortlistSearch``): a bf16 GEMM shortlist, the best two rows compared
  exactly in fp32; for bundles calibrated on an engine that runs bf16.

A GPU searcher would be a third entry in ``SEARCHERS`` (and a name the ``search`` param allows).
"""
from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

SearchName = Literal["fp32", "bf16"]


class NearestSearch(Protocol):
    name: str

    def search(self, queries: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]: ...


def augmented_bank(bank: np.ndarray, bank_sq: np.ndarray) -> np.ndarray:
    """float32 [D + 1, M]: rows -2 * bank.T, then bank_sq. ``[q, 1] @ this`` gives
    ||b||^2 - 2 q.b for every bank row in the GEMM itself (see ExactSearch.search)."""
    m, d = bank.shape
    aug = np.empty((d + 1, m), np.float32)
    aug[:d] = -2.0 * bank.T
    aug[d] = bank_sq
    return aug


class ExactSearch:
    """Exact Euclidean nearest neighbour in fp32.

    ||q - b||^2 = ||q||^2 + (||b||^2 - 2 q.b); the bracket comes out of one GEMM with the
    queries augmented by a column of ones, so no pass over the [P, M] matrix is spent on scaling
    and adding (the GEMM is ~85% of the time: at P=1024, M=4000, D=152 one core does it at
    ~140 GFLOPS; the old multiply + add passes cost ~1.5 ms more per frame of ~12 ms)."""

    name = "fp32"

    def __init__(self, bank: np.ndarray):
        self.bank = np.ascontiguousarray(bank, dtype=np.float32)
        self._augmented = augmented_bank(self.bank, np.einsum("ij,ij->i", self.bank, self.bank))

    def search(self, queries: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        queries = np.asarray(queries, dtype=np.float32)
        n, d = queries.shape
        dist = np.empty(n, np.float32)
        idx = np.empty(n, np.int64)
        for s in range(0, n, chunk):
            q = queries[s:s + chunk]
            qa = np.empty((len(q), d + 1), np.float32)
            qa[:, :d] = q
            qa[:, d] = 1.0
            d2 = qa @ self._augmented  # [c, M]: ||b||^2 - 2 q.b
            j = d2.argmin(axis=1)
            best = d2[np.arange(len(q)), j] + np.einsum("ij,ij->i", q, q)
            dist[s:s + chunk] = np.sqrt(np.maximum(best, 0.0))
            idx[s:s + chunk] = j
        return dist, idx


def build_searcher(name: str, bank: np.ndarray) -> NearestSearch:
    """The searcher a bundle's ``search`` param names, over ``bank`` float32 [M, D]."""
    if name == "bf16":
        from inspector.methods.knn_bf16 import Bf16ShortlistSearch  # loads torch: only when asked for

        return Bf16ShortlistSearch(bank)
    if name == "fp32":
        return ExactSearch(bank)
    raise ValueError(f"unknown search {name!r}; expected fp32 or bf16")


def search_for_engine(precision: str) -> SearchName:
    """The search a bank calibrated on an engine of ``precision`` uses: bf16 on a bf16 engine
    (the engine's features carry bf16 rounding already), else exact fp32."""
    return "bf16" if precision == "bf16" else "fp32"
