"""Greedy k-center coreset selection (PatchCore, Roth et al. 2022, sec. 3.2).

Iteratively picks the patch farthest from everything picked so far, so the bank covers the
golden feature space with few entries. Distances are taken on a random Gaussian projection of
the features (Johnson-Lindenstrauss), as in the paper, which makes each step a cheap GEMV.
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch


def coreset_size(n_patches: int, *, size: Optional[int], ratio: float, max_size: Optional[int] = None) -> int:
    k = size if size is not None else int(round(n_patches * ratio))
    if max_size is not None and size is None:
        k = min(k, max_size)
    return int(max(1, min(k, n_patches)))


def greedy_coreset(patches: np.ndarray, k: int, *, projection_dim: int = 64, seed: int = 0,
                   progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Indices (int64 [k]) of a k-center greedy coreset of ``patches`` float32 [P, D]."""
    n, d = patches.shape
    if k >= n:
        return np.arange(n)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    if projection_dim < d:
        proj = torch.randn(d, projection_dim, generator=gen) / np.sqrt(projection_dim)
        x = x @ proj
    sq = (x * x).sum(1)
    start = int(torch.randint(n, (1,), generator=gen))
    selected = np.empty(k, np.int64)
    selected[0] = start
    # min squared distance of every patch to the selected set, updated with one GEMV per pick
    mind = sq - 2 * torch.mv(x, x[start]) + sq[start]
    step = max(1, k // 100)
    for j in range(1, k):
        i = int(torch.argmax(mind))
        selected[j] = i
        dn = torch.mv(x, x[i])
        dn.mul_(-2).add_(sq).add_(sq[i])
        torch.minimum(mind, dn, out=mind)
        if progress and j % step == 0:
            progress(step)
    return selected


def bank_neighbours(bank: np.ndarray, b: int) -> np.ndarray:
    """int32 [M, b]: each bank entry's b nearest other entries (for PatchCore's reweighting)."""
    t = torch.from_numpy(bank)
    sq = (t * t).sum(1)
    out = np.empty((len(bank), b), np.int32)
    for s in range(0, len(bank), 2048):
        d = sq[s:s + 2048, None] - 2 * t[s:s + 2048] @ t.T + sq[None, :]
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out[s:s + 2048] = torch.topk(d, b, largest=False).indices.numpy()
    return out
