"""The geometry of a bundle, chosen at calibration: the work size the ROI crop is resized to, the
network input (tile), and the overlap (inspector/tiling.py explains the three).

``preprocess.size`` given: that work size. Otherwise the scale s (frame pixels -> network pixels)
comes from ``preprocess.scale`` or, with ``auto``, from the golden frames and
``calibration.min_defect_px`` (d):

- a defect of d frame pixels is d·s network pixels. The features are on a stride-8 grid, each
  cell averaged over its 3x3 neighbourhood (~24 px): a defect that fills one cell (8 px) changes
  that cell's feature clearly, a smaller one is diluted among good pixels. So s = 8 / d;
- never above 1 (upscaling adds pixels, not detail);
- never below the scale that brings the frame's longer side to one tile (a smaller work image
  throws away resolution the network would process for free);
- at most ``preprocess.max_tiles`` tiles per frame (cost grows with pixels): s is lowered until
  the frame fits, and the summary says which defect size is then still one cell (8 / s).

The work size is fixed per bundle: the golden frames' median ROI size times s, which keeps their
aspect ratio; every frame's ROI crop is resized to it, so tiles lie on the same grid for every
frame (PaDiM's per-position statistics need that, and the alignment reference has one size).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from inspector.preprocess import PreprocessSpec
from inspector.tiling import TileGrid

log = logging.getLogger(__name__)

CELL_PX = 8  # the feature stride: network pixels per feature cell


@dataclass(frozen=True)
class Geometry:
    spec: PreprocessSpec
    notes: tuple[str, ...] = ()  # what the calibration summary should say about the choice


def roi_size(shape: Sequence[int], roi: Optional[Sequence[int]]) -> tuple[int, int]:
    """(w, h) of the ROI crop of an image of ``shape`` (as Preprocessor.crop_resize cuts it)."""
    h0, w0 = int(shape[0]), int(shape[1])
    if roi is None:
        return w0, h0
    x, y, w, h = (int(v) for v in roi)
    return max(1, min(x + w, w0) - max(x, 0)), max(1, min(y + h, h0) - max(y, 0))


def _spec(cfg, content: tuple[int, int], scale: Optional[float]) -> PreprocessSpec:
    grid = TileGrid.plan(*content, *cfg.tile, cfg.tile_overlap)
    return PreprocessSpec(grid.tile_w, grid.tile_h, cfg.roi, cfg.align.spec(), content, cfg.tile_overlap,
                          None if scale is None else round(float(scale), 6),
                          None if scale is None else round(CELL_PX / scale, 2))


def _content(size: tuple[float, float], s: float) -> tuple[int, int]:
    return max(32, int(round(size[0] * s))), max(32, int(round(size[1] * s)))


def choose_geometry(cfg, min_defect_px: float, shapes: Sequence[Sequence[int]]) -> Geometry:
    """cfg: the PreprocessConfig; shapes: the golden images' array shapes (h, w[, c])."""
    sizes = np.array([roi_size(s, cfg.roi) for s in shapes], np.float64) if len(shapes) else np.zeros((0, 2))
    median = (float(np.median(sizes[:, 0])), float(np.median(sizes[:, 1]))) if len(sizes) else None
    if cfg.size != "auto":
        scale = None if median is None else float(np.sqrt(cfg.size[0] / median[0] * cfg.size[1] / median[1]))
        return Geometry(_spec(cfg, tuple(cfg.size), scale))
    if median is None:
        raise ValueError("preprocess.size auto needs golden images to measure")
    if cfg.scale != "auto":
        return Geometry(_spec(cfg, _content(median, cfg.scale), cfg.scale))
    notes = []
    wanted = CELL_PX / min_defect_px
    floor = min(1.0, max(cfg.tile) / max(median))
    s = min(1.0, max(wanted, floor))
    if wanted > 1.0:
        notes.append(f"calibration.min_defect_px {min_defect_px:g} is under one feature cell even at full "
                     f"resolution; the smallest defect that fills a cell is {CELL_PX} px")

    def count(scale: float) -> int:
        return TileGrid.plan(*_content(median, scale), *cfg.tile, cfg.tile_overlap).n_tiles

    capped = count(s)
    while count(s) > cfg.max_tiles:
        s *= 0.98
    if capped > cfg.max_tiles:
        notes.append(f"calibration.min_defect_px {min_defect_px:g} needs {capped} tiles a frame; capped at "
                     f"preprocess.max_tiles {cfg.max_tiles}: scale {s:.3g}, the smallest defect that fills a "
                     f"cell is ~{CELL_PX / s:.0f} px")
    geometry = Geometry(_spec(cfg, _content(median, s), s), tuple(notes))
    for n in notes:
        log.warning("geometry: %s", n)
    return geometry
