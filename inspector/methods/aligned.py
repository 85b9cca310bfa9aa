"""Aligned-neighbour patch maps: for parts that sit at the same place in every frame.

The memory bank asks "is this patch like any golden patch, anywhere?", so a label missing from a
bottle (bare glass there, and bare glass is normal elsewhere) or a wrong fill level finds a close
match and stays dark. Here each frame is compared with its ``k`` nearest golden images by layout
(the features averaged over a 4x4 grid of regions), patch by patch, against those images'
patches within ``radius`` cells of the same position: a patch normal somewhere else but not here
is far from all of them. SPADE (Cohen & Hoshen 2020) retrieves neighbour images the same way; the
position window is what makes it a test of the arrangement. On a line of several variants the
references can instead be picked by a key region (the label that names the variant,
``key_neighbours``), so the rest of the part is judged against the variant its key names.

Used by global_context (its ``aligned_map`` option); numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


def project(feats: np.ndarray, mean: Optional[np.ndarray], basis: Optional[np.ndarray]) -> np.ndarray:
    """feats [N, D, h, w] -> float32 [N, K, h, w] on the golden patches' top K principal directions
    (basis [D, K], centred on mean [D]); unchanged without a basis."""
    if basis is None:
        return feats
    n, d, h, w = feats.shape
    # one [K, D] @ [D, h*w] product per image, on its channels-first features as they are (no
    # transposed copy of every patch), centred after it: (x - mean) @ basis = x @ basis - mean @ basis
    rows, shift = np.ascontiguousarray(basis.T, np.float32), (mean @ basis).astype(np.float32)[:, None]
    out = np.empty((n, rows.shape[0], h, w), np.float32)
    for i in range(n):
        out[i] = (rows @ np.asarray(feats[i], np.float32).reshape(d, h * w) - shift).reshape(-1, h, w)
    return out


def layouts(feats: np.ndarray, boxes) -> np.ndarray:
    """feats [N, D, h, w] -> float32 [N, R*D]: the average feature of each (y0, y1, x0, x1) box."""
    out = np.empty((len(feats), len(boxes), feats.shape[1]), np.float32)
    for r, (y0, y1, x0, x1) in enumerate(boxes):
        out[:, r] = feats[:, :, y0:y1, x0:x1].mean(axis=(2, 3), dtype=np.float64)
    return out.reshape(len(feats), -1)


def region_sq(layouts: np.ndarray, regions: int) -> np.ndarray:
    """[M, R*D] layouts -> their squared norms per region, [M, R]."""
    r = layouts.reshape(len(layouts), regions, -1)
    return np.einsum("mrd,mrd->mr", r, r)


def trimmed_distances(query_layouts: np.ndarray, golden_layouts: np.ndarray, regions: int, trim: int,
                      golden_sq: Optional[np.ndarray] = None) -> np.ndarray:
    """[N, R*D], [M, R*D] -> [N, M]: the squared layout distance summed over the regions without
    the ``trim`` regions where the pair differs most, so a defect's own regions (a missing label,
    a band of another texture) do not pick the frame's references. ``golden_sq``: region_sq of
    the golden layouts, made once by the caller."""
    g = golden_layouts.reshape(len(golden_layouts), regions, -1).transpose(1, 0, 2)  # [R, M, D]
    q = query_layouts.astype(golden_layouts.dtype).reshape(len(query_layouts), regions, -1).transpose(1, 0, 2)
    gsq = region_sq(golden_layouts, regions) if golden_sq is None else golden_sq
    d2 = gsq.T[:, None, :] - 2.0 * np.matmul(q, g.transpose(0, 2, 1))  # [R, N, M]
    d2 += np.einsum("rnd,rnd->rn", q, q)[:, :, None]  # the query's norm differs per region: it counts here
    return np.sort(d2, axis=0)[:regions - trim].sum(axis=0)


def nearest_images(query_layouts: np.ndarray, golden_layouts: np.ndarray, k: int,
                   exclude: Optional[np.ndarray] = None, golden_sq: Optional[np.ndarray] = None,
                   trim: int = 0, regions: int = 1) -> np.ndarray:
    """The ``k`` golden images nearest each query by layout (L2), int [N, k], nearest first.
    ``exclude``: the golden images each query may not pick (itself, its augmented copies): int [N],
    one index each (-1: none), or bool [N, M]. ``golden_sq``:
    the golden layouts' squared norms ([M]; region_sq's [M, R] with ``trim``), made once by the
    caller (per frame they cost more than the search: a copy of every golden layout). ``trim``:
    the regions (of ``regions`` in a layout) where a pair differs most left out of its distance."""
    g = golden_layouts
    if trim:
        if not 0 < trim < regions:
            raise ValueError(f"trim {trim} must be below the layout's {regions} regions")
        d2 = trimmed_distances(query_layouts, g, regions, trim, golden_sq)
    else:
        if golden_sq is None:
            golden_sq = np.einsum("md,md->m", g, g)
        # the query's own norm is the same for every golden image: it does not change the ranking
        d2 = golden_sq[None] - 2.0 * (query_layouts.astype(g.dtype) @ g.T)
    left_out = 0
    if exclude is not None and exclude.ndim == 2:
        d2[exclude] = np.inf
        left_out = int(exclude.sum(axis=1).max()) if len(exclude) else 0
    elif exclude is not None:
        rows = np.flatnonzero(exclude >= 0)
        d2[rows, exclude[rows]] = np.inf
        left_out = 1
    k = max(1, min(k, len(g) - left_out))
    return np.argsort(d2, axis=1, kind="stable")[:, :k]


def window_d2(query: np.ndarray, golden: np.ndarray, radius: int) -> np.ndarray:
    """query [h, w, D], golden [k, h, w, D] (channels last, float32) -> [k, h, w]: each query patch's
    squared distance to each golden image's nearest patch within ``radius`` cells of its position."""
    h, w, _ = query.shape
    q2 = np.einsum("yxd,yxd->yx", query, query)
    g2 = np.einsum("kyxd,kyxd->kyx", golden, golden)
    best = np.full((len(golden), h, w), np.inf, np.float32)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if abs(dy) >= h or abs(dx) >= w:  # no pair that far apart (a key box smaller than the radius)
                continue
            # the query at (y, x) against the golden patch at (y + dy, x + dx)
            qy, gy = slice(max(0, -dy), h - max(0, dy)), slice(max(0, dy), h + min(0, dy))
            qx, gx = slice(max(0, -dx), w - max(0, dx)), slice(max(0, dx), w + min(0, dx))
            cross = np.einsum("kyxd,yxd->kyx", golden[:, gy, gx], query[qy, qx])
            np.minimum(best[:, qy, qx], g2[:, gy, gx] - 2.0 * cross + q2[qy, qx], out=best[:, qy, qx])
    return best


def window_distances(query: np.ndarray, golden: np.ndarray, radius: int) -> np.ndarray:
    """query [h, w, D], golden [k, h, w, D] (channels last, float32) -> [h, w]: each query patch's
    distance to the nearest golden patch within ``radius`` cells of its position."""
    return np.sqrt(np.maximum(window_d2(query, golden, radius).min(axis=0), 0.0))


def key_neighbours(feats: np.ndarray, golden_key: np.ndarray, box, k: int, radius: int) -> np.ndarray:
    """The ``k`` golden images whose key region looks most like each frame's, int [N, k], nearest
    first: feats [N, K, h, w]; golden_key the golden images' patches inside ``box`` (y0, y1, x0, x1),
    channels last [M, bh, bw, K]. Compared patch by patch (each of the frame's key patches to the
    golden image's nearest key patch within ``radius`` cells, averaged), so the key's own
    arrangement counts, not only its average."""
    y0, y1, x0, x1 = box
    d = np.empty((len(feats), len(golden_key)), np.float32)
    for i in range(len(feats)):
        q = np.ascontiguousarray(feats[i, :, y0:y1, x0:x1].transpose(1, 2, 0), dtype=np.float32)
        d[i] = np.sqrt(np.maximum(window_d2(q, golden_key, radius), 0.0)).reshape(len(golden_key), -1).mean(axis=1)
    return np.argsort(d, axis=1, kind="stable")[:, :min(k, len(golden_key))]


def aligned_maps(feats: np.ndarray, golden: np.ndarray, golden_layouts: np.ndarray, boxes, k: int,
                 radius: int, exclude: Optional[np.ndarray] = None,
                 golden_sq: Optional[np.ndarray] = None, trim: int = 0,
                 nbrs: Optional[np.ndarray] = None) -> np.ndarray:
    """feats float32 [N, D, h, w], golden [M, D, h, w] (any float dtype) -> distance maps float32
    [N, h, w], each frame against its ``k`` nearest golden images (``exclude``, ``golden_sq``,
    ``trim`` as nearest_images, the layout's regions being ``boxes``), or against the golden images
    ``nbrs`` (int [N, k]) picked by the caller."""
    if nbrs is None:
        nbrs = nearest_images(layouts(feats, boxes), golden_layouts, k, exclude, golden_sq, trim, len(boxes))
    out = np.empty((len(feats),) + feats.shape[2:], np.float32)
    for i in range(len(feats)):
        q = np.ascontiguousarray(feats[i].transpose(1, 2, 0), dtype=np.float32)
        g = np.ascontiguousarray(golden[nbrs[i]].transpose(0, 2, 3, 1), dtype=np.float32)
        out[i] = window_distances(q, g, radius)
    return out


@dataclass(frozen=True)
class References:
    """Golden images' features [M, K, h, w] with their layouts over ``boxes`` and the layouts'
    squared norms, whole [M] and per region [M, R]: made once per bundle, not per frame."""

    golden: np.ndarray
    boxes: list
    layouts: np.ndarray
    sq: np.ndarray
    region_sq: np.ndarray

    @classmethod
    def of(cls, golden: np.ndarray, boxes) -> "References":
        lay = layouts(golden, boxes)
        return cls(golden, boxes, lay, np.einsum("md,md->m", lay, lay), region_sq(lay, len(boxes)))

    def maps(self, feats: np.ndarray, k: int, radius: int, trim: int = 0,
             exclude: Optional[np.ndarray] = None, nbrs: Optional[np.ndarray] = None) -> np.ndarray:
        """aligned_maps of ``feats`` [N, K, h, w] against these golden images (``nbrs``: the ones
        each frame is compared with, picked elsewhere)."""
        return aligned_maps(feats, self.golden, self.layouts, self.boxes, k, radius, exclude,
                            golden_sq=self.region_sq if trim else self.sq, trim=trim, nbrs=nbrs)
