"""Tiling: a work image larger than the network input is cut into overlapping tiles, and the
network's outputs of those tiles are put back together into one map of the whole work image.

The geometry is fixed per bundle (calibration chooses it, inspector/preprocess.py's
PreprocessSpec records it), so every frame is cut on the same grid:

- the *content*: the ROI crop resized to the bundle's work size (Wc x Hc, the golden frames'
  aspect ratio);
- the *work image*: the content padded on the right and bottom by edge reflection up to a
  multiple of 32 (Wp x Hp), so nothing is distorted to fit the network's stride;
- the *tiles*: network inputs of tile_w x tile_h at origins that are multiples of 8 (the feature
  stride), consecutive tiles overlapping by about ``overlap`` pixels. A work image no larger than
  the tile is one input of exactly its own size (possibly non-square).

Stitching works on the engine outputs (stride-8 feature grids, or a head's patch scores), not on
scores: each work-image cell takes its value from the tile in which it lies furthest from the
tile's border (the overlap is split in the middle), so no cell is seen only with the network's
zero padding next to it, and the scorer sees one feature map per frame as if the network had run
on the whole work image. That keeps every scorer's own image score (PatchCore's max, its
reweighting, OC-SVM's pooled vector) and lets PaDiM keep per-position statistics over the work
image; the Gaussian smoothing then runs on the whole map, so tile borders leave no seam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

ALIGN = 8  # tile origins are multiples of the feature stride, so cells of neighbouring tiles coincide
MULTIPLE = 32  # network input sides (and the padded work image) are multiples of this


def round_up(v: int, multiple: int = MULTIPLE) -> int:
    return int(math.ceil(v / multiple) * multiple)


def axis_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Tile origins along one axis of ``length`` pixels: evenly spread from 0 to length - tile,
    at multiples of 8, as few as keep consecutive tiles overlapping by about ``overlap``."""
    if length <= tile:
        return (0,)
    n = max(2, math.ceil((length - overlap) / (tile - overlap)))
    span = length - tile
    return tuple(int(round(span * i / (n - 1) / ALIGN)) * ALIGN for i in range(n))


def tiles_for(length: int, tile: int, overlap: int) -> int:
    return len(axis_starts(length, tile, overlap))


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one work image lie. All sizes in work-image pixels."""

    content_w: int
    content_h: int
    work_w: int  # padded to a multiple of 32
    work_h: int
    tile_w: int  # the network input
    tile_h: int
    xs: tuple[int, ...]
    ys: tuple[int, ...]

    @classmethod
    def plan(cls, content_w: int, content_h: int, tile_w: int, tile_h: int, overlap: int) -> "TileGrid":
        """The grid for a content size and the largest network input; the network input shrinks
        to the work image along an axis where the work image is smaller than the tile."""
        work_w, work_h = round_up(content_w), round_up(content_h)
        tw, th = min(tile_w, work_w), min(tile_h, work_h)
        return cls(content_w, content_h, work_w, work_h, tw, th, axis_starts(work_w, tw, overlap),
                   axis_starts(work_h, th, overlap))

    @property
    def n_tiles(self) -> int:
        return len(self.xs) * len(self.ys)

    @property
    def tiled(self) -> bool:
        return self.n_tiles > 1

    @property
    def work_hw(self) -> tuple[int, int]:
        return self.work_h, self.work_w

    @property
    def content_hw(self) -> tuple[int, int]:
        return self.content_h, self.content_w

    @property
    def tile_hw(self) -> tuple[int, int]:
        return self.tile_h, self.tile_w

    def split(self, works: Sequence[np.ndarray]) -> np.ndarray:
        """Work images float32 [3, Hp, Wp] -> the network inputs [N * n_tiles, 3, th, tw], the
        tiles of each frame together, row by row."""
        if not self.tiled:
            return np.stack(works)
        th, tw = self.tile_hw
        return np.stack([w[:, y:y + th, x:x + tw] for w in works for y in self.ys for x in self.xs])

    def stitch(self, outputs: dict[str, np.ndarray], n_frames: int) -> dict[str, np.ndarray]:
        """Engine outputs of ``split``'s tiles {name: [N * n_tiles, C, h, w]} -> one map per
        frame {name: [N, C, Hp / stride, Wp / stride]}; each cell from the tile where it is most
        interior (the overlap cut in the middle)."""
        if not self.tiled:
            return outputs
        return {name: self._stitch_one(name, arr, n_frames) for name, arr in outputs.items()}

    def _stitch_one(self, name: str, arr: np.ndarray, n_frames: int) -> np.ndarray:
        if arr.ndim != 4 or arr.shape[0] != n_frames * self.n_tiles:
            raise ValueError(f"output {name!r} of shape {list(arr.shape)} cannot be stitched from "
                             f"{n_frames} x {self.n_tiles} tiles")
        _, c, h, w = arr.shape
        stride = self.tile_h // h
        if h * stride != self.tile_h or w * stride != self.tile_w or ALIGN % stride:
            raise ValueError(f"output {name!r} ({h}x{w} per {self.tile_h}x{self.tile_w} tile) is not on a grid "
                             f"that tiles can be stitched on")
        out = np.empty((n_frames, c, self.work_h // stride, self.work_w // stride), arr.dtype)
        rows = _owned(self.ys, self.tile_h, self.work_h, stride)
        cols = _owned(self.xs, self.tile_w, self.work_w, stride)
        k = 0
        for f in range(n_frames):
            for d0, d1, s0 in rows:
                for e0, e1, t0 in cols:
                    out[f, :, d0:d1, e0:e1] = arr[k, :, s0:s0 + d1 - d0, t0:t0 + e1 - e0]
                    k += 1
        return out

    def content(self, work_map: np.ndarray) -> np.ndarray:
        """A map over the padded work image [..., Hp, Wp] -> the content part [..., Hc, Wc]."""
        return work_map[..., :self.content_h, :self.content_w]


def _owned(starts: Sequence[int], tile: int, length: int, stride: int) -> list[tuple[int, int, int]]:
    """Per tile along one axis: (first cell, end cell) it owns in the work grid, and the cell in
    the tile where that begins. The boundary between neighbours is the middle of their overlap."""
    cuts = [0] + [((a + b + tile) // 2) // stride * stride for a, b in zip(starts, starts[1:])] + [length]
    return [(cuts[i] // stride, cuts[i + 1] // stride, (cuts[i] - starts[i]) // stride) for i in range(len(starts))]
