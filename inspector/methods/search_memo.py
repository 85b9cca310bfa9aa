"""Nearest-neighbour answers for rows searched before, inside a scope that calibration opens.

Calibration's escape-rate step pastes synthetic defects into the held-out golden images and scores
them. With a tiled frame, the tiles a defect does not touch give exactly the clean image's
features, whose rows were searched when the thresholds were set. Inside ``remembering(memo)``
every row searched is kept with its answer; inside ``reusing(memo)`` a row bitwise equal to a
kept one (searched by the same searcher) takes that answer and only the other rows are searched.
A row is matched by a 64-bit fingerprint and then compared in full, so nothing is approximated.
The daemon never opens a scope: there ``search`` is the searcher's own.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Optional

import numpy as np

from inspector.methods.knn import NearestSearch

_SCOPE: ContextVar[Optional[tuple["SearchMemo", bool]]] = ContextVar("search_memo", default=None)
_CHUNK = 4096


def search(searcher: NearestSearch, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``searcher.search(queries)``, through the memo of the scope this runs in, if any."""
    scope = _SCOPE.get()
    if scope is None:
        return searcher.search(queries)
    memo, record = scope
    return memo.search(searcher, queries, record)


@contextmanager
def _scope(memo: "SearchMemo", record: bool) -> Iterator["SearchMemo"]:
    token = _SCOPE.set((memo, record))
    try:
        yield memo
    finally:
        _SCOPE.reset(token)


def remembering(memo: "SearchMemo"):
    """Keep every row searched in this scope (and answer repeats from the memo)."""
    return _scope(memo, True)


def reusing(memo: "SearchMemo"):
    """Answer rows kept before from the memo; keep nothing new."""
    return _scope(memo, False)


@lru_cache(maxsize=8)
def _multipliers(width: int) -> np.ndarray:
    return np.random.default_rng(0x5EED).integers(1, 2 ** 63, width, dtype=np.uint64) * 2 + 1


def fingerprints(rows: np.ndarray) -> np.ndarray:
    """uint64 [P]: each row's bits times fixed random odd multipliers, summed modulo 2^64 (equal
    rows, equal fingerprints; unequal ones collide with chance ~2^-64, and are compared anyway)."""
    bits = np.ascontiguousarray(rows).view(np.uint32)
    mult = _multipliers(bits.shape[1])
    out = np.empty(len(rows), np.uint64)
    for s in range(0, len(rows), _CHUNK):
        out[s:s + _CHUNK] = (bits[s:s + _CHUNK].astype(np.uint64) * mult).sum(axis=1, dtype=np.uint64)
    return out


@dataclass
class _Kept:
    searcher: NearestSearch  # held, so its id() is not reused while the memo lives
    parts: list  # (rows, fingerprints, dist, idx) per search
    index: Optional[tuple] = None  # (rows, sorted fingerprints, their order, dist, idx), made when first needed

    def joined(self) -> tuple:
        if self.index is None:
            rows, fps, dist, idx = (self.parts[0] if len(self.parts) == 1 else
                                    tuple(np.concatenate(a) for a in zip(*self.parts)))  # one part: no copy
            order = np.argsort(fps, kind="stable")
            self.index = (rows, fps[order], order, dist, idx)
        return self.index


class SearchMemo:
    """Rows searched in a ``remembering`` scope, at most ``max_bytes`` of them (rows, fingerprints
    and answers; past it, the first rows that fit are kept); ``hits`` / ``searched`` count the rows
    answered from memory / by the searcher. The rows are kept as the caller passed them (no copy):
    a caller must not write into a query array after searching it."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.searched = 0
        self._kept: dict[int, _Kept] = {}

    def search(self, searcher: NearestSearch, queries: np.ndarray, record: bool) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        kept = self._kept.get(id(searcher))
        fps = fingerprints(queries) if (kept is not None or record) else None
        hit = np.zeros(len(queries), bool)
        dist = np.empty(len(queries), np.float32)
        idx = np.empty(len(queries), np.int64)
        if kept is not None and len(queries) and kept.parts:
            rows, sorted_fps, order, k_dist, k_idx = kept.joined()
            pos = np.minimum(np.searchsorted(sorted_fps, fps), len(sorted_fps) - 1)
            cand = order[pos]
            maybe = np.flatnonzero(sorted_fps[pos] == fps)
            same = maybe[np.all(rows[cand[maybe]] == queries[maybe], axis=1)]
            hit[same] = True
            dist[same], idx[same] = k_dist[cand[same]], k_idx[cand[same]]
        miss = np.flatnonzero(~hit)
        if len(miss):
            d, i = searcher.search(queries if len(miss) == len(queries) else queries[miss])
            dist[miss], idx[miss] = d, i
        self.hits += int(hit.sum())
        self.searched += len(miss)
        per_row = queries.shape[1] * 4 + 8 + 4 + 8  # the row, its fingerprint, distance and index
        room = min(len(queries), (self.max_bytes - self.bytes) // per_row) if record else 0
        if room > 0:
            if kept is None:
                kept = self._kept[id(searcher)] = _Kept(searcher, [])
            kept.parts.append((queries[:room], fps[:room], dist[:room].copy(), idx[:room].copy()))
            kept.index = None
            self.bytes += room * per_row
        return dist, idx
