"""Greedy k-center coreset selection (PatchCore, Roth et al. 2022, sec. 3.2).

Iteratively picks the patch farthest from everything picked so far, so the bank covers the
golden feature space with few entries. Distances are taken on a random Gaussian projection of
the features (Johnson-Lindenstrauss), as in the paper.

Each pick updates only the patches it can be nearer to. A patch p whose nearest pick so far is
a can only come nearer to the new pick c if |a - c| < 2 |p - a| (triangle inequality), so one
gather of the pick-to-pick distances over every patch's nearest pick finds them; after the
first few dozen picks that is 1-3% of the patches. The picks are those of the plain algorithm
(one distance to every patch per pick; up to float32 rounding: on MVTec bottle the same 2000
patches), which on bottle's 214k patches read the whole projected set (55 MB) 2000 times.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import numpy as np
from threadpoolctl import threadpool_limits


def coreset_size(n_patches: int, *, size: Optional[int], ratio: float, max_size: Optional[int] = None) -> int:
    k = size if size is not None else int(round(n_patches * ratio))
    if max_size is not None and size is None:
        k = min(k, max_size)
    return int(max(1, min(k, n_patches)))


# squared-distance form of |a - c| < 2 |p - a| with 0.04% slack for float32 rounding (a patch
# left out by the slack could only have come nearer by a rounding error)
_PRUNE = np.float32(0.2499)


def greedy_coreset(patches: np.ndarray, k: int, *, projection_dim: int = 64, seed: int = 0,
                   progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Indices (int64 [k]) of a k-center greedy coreset of ``patches`` float32 [P, D]."""
    import torch  # here: calibrate imports this module before torch is needed (calibration/network.py)

    n, d = patches.shape
    if k >= n:
        return np.arange(n)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(np.ascontiguousarray(patches, dtype=np.float32))
    if projection_dim < d:
        proj = torch.randn(d, projection_dim, generator=gen) / np.sqrt(projection_dim)
        x = x @ proj
    start = int(torch.randint(n, (1,), generator=gen))
    # the products below are small (a few thousand rows): a second BLAS thread only spins
    # (bottle, 2 shared cores: 9.1 s of CPU instead of 5.5 s)
    with limited_blas(1):
        return _greedy_from(np.ascontiguousarray(x.numpy()), start, k, progress)


_limit_lock = threading.Lock()
_limit_users = 0
_limit = None


@contextmanager
def limited_blas(threads: int = 1) -> Iterator[None]:
    """At most ``threads`` BLAS threads while any coreset is being picked (one) or while a caller
    holds the limit. The limit is process-wide: nested threadpool_limits entered and left out of
    order would leave the process at one thread for good, so the first user sets it (with its
    ``threads``) and the last restores it. Setting or restoring it while another thread is inside
    a BLAS call can leave OpenBLAS at one thread for the rest of the process whatever the setting
    says, so code that fits on two threads at once (calibrate) holds it, at half the cores each,
    from before the second thread starts until that thread has ended."""
    global _limit_users, _limit
    with _limit_lock:
        if _limit_users == 0:
            _limit = threadpool_limits(limits=threads, user_api="blas")
        _limit_users += 1
    try:
        yield
    finally:
        with _limit_lock:
            _limit_users -= 1
            if _limit_users == 0:
                _limit.restore_original_limits()
                _limit = None


def _greedy_from(x: np.ndarray, start: int, k: int, progress: Optional[Callable[[int], None]]) -> np.ndarray:
    n = len(x)
    sq = np.einsum("ij,ij->i", x, x)
    selected = np.empty(k, np.int64)
    selected[0] = start
    picked, picked_sq = np.empty((k, x.shape[1]), np.float32), np.empty(k, np.float32)
    picked[0], picked_sq[0] = x[start], sq[start]
    # squared distance of every patch to its nearest pick so far, and which pick that is
    mind = sq - 2 * (x @ x[start]) + sq[start]
    nearest = np.zeros(n, np.intp)
    bound = np.empty(n, np.float32)
    step = max(1, k // 100)
    for j in range(1, k):
        i = int(mind.argmax())
        selected[j] = i
        c, c_sq = x[i], sq[i]
        picked[j], picked_sq[j] = c, c_sq
        pick_dist = picked_sq[:j] - 2 * (picked[:j] @ c) + c_sq  # new pick to every earlier pick
        np.take(pick_dist, nearest, out=bound)
        bound *= _PRUNE
        near = np.flatnonzero(bound < mind)
        if len(near) > n // 4:
            # little pruned (textures: every patch near every pick): one plain GEMV beats gathering
            # the rows first (magnetic_tile, 680k patches: 121 s of fitting with the gather)
            dist = sq - 2 * (x @ c) + c_sq
            moved = np.flatnonzero(dist < mind)
            mind[moved] = dist[moved]
        else:
            # np.take copies whole rows; x[near] goes through numpy's general fancy indexing, and
            # that gather was most of the picking time
            dist = sq[near] - 2 * (np.take(x, near, axis=0) @ c) + c_sq
            closer = dist < mind[near]
            moved = near[closer]
            mind[moved] = dist[closer]
        nearest[moved] = j
        if progress and j % step == 0:
            progress(step)
    return selected


def bank_neighbours(bank: np.ndarray, b: int) -> np.ndarray:
    """int32 [M, b]: each bank entry's b nearest other entries (for PatchCore's reweighting)."""
    import torch

    t = torch.from_numpy(bank)
    sq = (t * t).sum(1)
    out = np.empty((len(bank), b), np.int32)
    for s in range(0, len(bank), 2048):
        d = sq[s:s + 2048, None] - 2 * t[s:s + 2048] @ t.T + sq[None, :]
        d[torch.arange(d.shape[0]), torch.arange(s, s + d.shape[0])] = float("inf")
        out[s:s + 2048] = torch.topk(d, b, largest=False).indices.numpy()
    return out
