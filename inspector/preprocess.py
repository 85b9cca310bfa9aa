"""Frames -> network input: ROI crop, resize to the work size, optional alignment, padding,
colour order, scaling to [0, 1]; then cutting into tiles when the work image is larger than the
network input (inspector/tiling.py).

The backbone's own mean/std normalisation is inside the network graph, so this stage is the
same for every backbone. Each frame keeps its RoiTransform so maps (in work-image pixels) can be
drawn back onto the original image.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from inspector.align import Aligner, AlignSpec, to_grey
from inspector.decode import FrameError
from inspector.pose import PoseAligner
from inspector.tiling import TileGrid
from inspector.types import RoiTransform


@dataclass(frozen=True)
class PreprocessSpec:
    """What calibration used; saved in the bundle and checked by the daemon.

    The geometry (inspector/tiling.py): the ROI crop is resized to ``work`` (W, H; the golden
    frames' aspect ratio), padded to a multiple of 32 by edge reflection, and cut into network
    inputs of ``width`` x ``height`` overlapping by about ``tile_overlap`` pixels (one input when
    it fits). Bundles from before tiling have no ``work``: the work image is the network input."""

    width: int  # the network input (one tile)
    height: int
    roi: Optional[tuple[int, int, int, int]] = None  # x, y, w, h
    align: Optional[AlignSpec] = None  # registration to the golden reference (inspector/align.py)
    work: Optional[tuple[int, int]] = None  # (W, H) the ROI crop is resized to; None: (width, height)
    tile_overlap: int = 0
    # for people, not used at run time: the frame -> network scale at the golden frames' median
    # size, and the smallest defect (frame pixels) that covers one feature cell at that scale
    frame_scale: Optional[float] = None
    min_defect_px: Optional[float] = None
    # align motion pose: (W, H) the ROI crop is resized to before the pose warp cuts the part's
    # box (``work``) out of it; None: the crop is resized to ``work`` itself
    canvas: Optional[tuple[int, int]] = None
    # preprocess.align.enabled auto: what calibration decided and why (calibration/pose_auto.py);
    # for people, not used at run time
    align_auto: Optional[dict] = None

    @property
    def canvas_size(self) -> tuple[int, int]:
        return self.canvas if self.canvas is not None else self.work_size

    @property
    def work_size(self) -> tuple[int, int]:
        return self.work if self.work is not None else (self.width, self.height)

    @property
    def grid(self) -> TileGrid:
        grid = TileGrid.plan(*self.work_size, self.width, self.height, self.tile_overlap)
        if grid.tile_hw != (self.height, self.width):
            raise ValueError(f"network input {self.width}x{self.height} is larger than the padded work image "
                             f"{grid.work_w}x{grid.work_h}")
        return grid

    def to_json(self) -> dict:
        grid = self.grid
        return {"width": self.width, "height": self.height, "roi": list(self.roi) if self.roi else None,
                "color": "rgb", "scale": "0..1", "align": self.align.to_json() if self.align else None,
                "work_size": list(self.work_size), "tile_overlap": self.tile_overlap, "tiles": grid.n_tiles,
                "frame_scale": self.frame_scale, "min_defect_px": self.min_defect_px,
                "canvas": list(self.canvas) if self.canvas else None, "align_auto": self.align_auto}

    @classmethod
    def from_json(cls, d: dict) -> "PreprocessSpec":
        work = d.get("work_size")
        return cls(int(d["width"]), int(d["height"]), tuple(d["roi"]) if d.get("roi") else None,
                   AlignSpec.from_json(d.get("align")), tuple(int(v) for v in work) if work else None,
                   int(d.get("tile_overlap") or 0), d.get("frame_scale"), d.get("min_defect_px"),
                   tuple(int(v) for v in d["canvas"]) if d.get("canvas") else None, d.get("align_auto"))

    def describe(self) -> str:
        """One line for logs and summaries: work size, tiles, scale."""
        grid = self.grid
        w, h = self.work_size
        words = f"work {w}x{h}"
        if self.canvas is not None:
            words += f" (the part's box, cut from {self.canvas[0]}x{self.canvas[1]} by its pose)"
        words += (f", {grid.n_tiles} tiles of {self.width}x{self.height} ({len(grid.xs)}x{len(grid.ys)}, "
                  f"overlap {self.tile_overlap} px)" if grid.tiled else f", one {self.width}x{self.height} input")
        if self.frame_scale is not None:
            words += f", scale {self.frame_scale:.3g}"
        return words


class Preprocessor:
    def __init__(self, spec: PreprocessSpec, roi_by_source: Optional[dict[str, tuple[int, int, int, int]]] = None,
                 reference: Optional[np.ndarray] = None):
        """reference: the golden reference view (float32 grey, the work size); required when
        ``spec.align`` is set."""
        self.spec = spec
        self.grid = spec.grid
        self.roi_by_source = dict(roi_by_source or {})
        self.aligner = None
        if spec.align is not None:
            if reference is None:
                raise ValueError("preprocess.align is on but there is no golden reference image")
            self.aligner = (PoseAligner(reference, spec.align.min_correlation) if spec.align.motion == "pose"
                            else Aligner(reference, spec.align))

    def prepare(self, image: np.ndarray, roi: Optional[Sequence[int]] = None) -> tuple[np.ndarray, RoiTransform]:
        """One image (BGR HxWx3 or grey HxW uint8) -> the work image, float32 CHW RGB in [0, 1]
        (padded to the grid's work size; ``tiles`` cuts it into network inputs), and its
        transform. With alignment on, the image is also registered to the golden reference
        (FrameError if it cannot be). Untiled bundles: the work image is the network input."""
        resized, tr = self.crop_resize(image, roi)
        if self.aligner is not None:
            warp = self.aligner.estimate(to_grey(resized))
            resized = self.aligner.warp_image(resized, warp)
            tr = dataclasses.replace(tr, align=tuple(float(v) for v in warp.ravel()))
        pad_h, pad_w = self.grid.work_h - resized.shape[0], self.grid.work_w - resized.shape[1]
        if pad_h or pad_w:  # mirrored in, so the network sees no edge the part does not have
            resized = cv2.copyMakeBorder(resized, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        if resized.ndim == 2:
            rgb = cv2.cvtColor(resized, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        chw = rgb.transpose(2, 0, 1).astype(np.float32)
        chw *= 1.0 / 255.0
        return chw, tr

    def tiles(self, works: Sequence[np.ndarray]) -> np.ndarray:
        """Work images from ``prepare`` -> network inputs [N * tiles, 3, height, width]."""
        return self.grid.split(works)

    def crop_resize(self, image: np.ndarray, roi: Optional[Sequence[int]] = None) -> tuple[np.ndarray, RoiTransform]:
        """The ROI crop resized to the canvas (the work size, or with align motion pose the size the
        part's box is cut from; unpadded), still uint8 BGR/grey, and its transform."""
        h0, w0 = image.shape[:2]
        roi = roi if roi is not None else self.spec.roi
        if roi is not None:
            x, y, w, h = (int(v) for v in roi)
            x2, y2 = min(x + w, w0), min(y + h, h0)
            x, y = max(x, 0), max(y, 0)
            if x2 - x < 8 or y2 - y < 8:
                raise FrameError(f"ROI {list(roi)} lies outside the {w0}x{h0} image; fix the roi setting")
            image = image[y:y2, x:x2]
            w, h = x2 - x, y2 - y
        else:
            x = y = 0
            w, h = w0, h0
        W, H = self.spec.canvas_size
        interp = cv2.INTER_AREA if (w > W or h > H) else cv2.INTER_LINEAR
        resized = cv2.resize(image, (W, H), interpolation=interp)
        return resized, RoiTransform(x, y, w, h, W / w, H / h, w0, h0)


def map_to_original(pixel_map: np.ndarray, tr: RoiTransform) -> np.ndarray:
    """A [H, W] map in work-image (content) coordinates -> [original_h, original_w], zero outside the ROI."""
    out = np.zeros((tr.original_h, tr.original_w), dtype=np.float32)
    roi_map = cv2.resize(pixel_map.astype(np.float32), (tr.roi_w, tr.roi_h), interpolation=cv2.INTER_LINEAR)
    out[tr.roi_y:tr.roi_y + tr.roi_h, tr.roi_x:tr.roi_x + tr.roi_w] = roi_map
    return out
