"""Frames -> network input: ROI crop, resize, colour order, scaling to [0, 1].

The backbone's own mean/std normalisation is inside the network graph, so this stage is the
same for every backbone. Each frame keeps its RoiTransform so maps can be drawn back onto the
original image.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from inspector.align import Aligner, AlignSpec, to_grey
from inspector.decode import FrameError
from inspector.types import RoiTransform


@dataclass(frozen=True)
class PreprocessSpec:
    """What calibration used; saved in the bundle and checked by the daemon."""

    width: int
    height: int
    roi: Optional[tuple[int, int, int, int]] = None  # x, y, w, h
    align: Optional[AlignSpec] = None  # registration to the golden reference (inspector/align.py)

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height, "roi": list(self.roi) if self.roi else None,
                "color": "rgb", "scale": "0..1", "align": self.align.to_json() if self.align else None}

    @classmethod
    def from_json(cls, d: dict) -> "PreprocessSpec":
        return cls(int(d["width"]), int(d["height"]), tuple(d["roi"]) if d.get("roi") else None,
                   AlignSpec.from_json(d.get("align")))


class Preprocessor:
    def __init__(self, spec: PreprocessSpec, roi_by_source: Optional[dict[str, tuple[int, int, int, int]]] = None,
                 reference: Optional[np.ndarray] = None):
        """reference: the golden reference view (float32 grey [height, width]); required when
        ``spec.align`` is set."""
        self.spec = spec
        self.roi_by_source = dict(roi_by_source or {})
        self.aligner = None
        if spec.align is not None:
            if reference is None:
                raise ValueError("preprocess.align is on but there is no golden reference image")
            self.aligner = Aligner(reference, spec.align)

    def prepare(self, image: np.ndarray, roi: Optional[Sequence[int]] = None) -> tuple[np.ndarray, RoiTransform]:
        """One image (BGR HxWx3 or grey HxW uint8) -> float32 CHW RGB in [0, 1] and its transform.
        With alignment on, the image is also registered to the golden reference (FrameError if it
        cannot be)."""
        resized, tr = self.crop_resize(image, roi)
        if self.aligner is not None:
            warp = self.aligner.estimate(to_grey(resized))
            resized = self.aligner.warp_image(resized, warp)
            tr = dataclasses.replace(tr, align=tuple(float(v) for v in warp.ravel()))
        if resized.ndim == 2:
            rgb = cv2.cvtColor(resized, cv2.COLOR_GRAY2RGB)
        else:
            rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        chw = rgb.transpose(2, 0, 1).astype(np.float32)
        chw *= 1.0 / 255.0
        return chw, tr

    def crop_resize(self, image: np.ndarray, roi: Optional[Sequence[int]] = None) -> tuple[np.ndarray, RoiTransform]:
        """The ROI crop resized to the network input, still uint8 BGR/grey, and its transform."""
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
        W, H = self.spec.width, self.spec.height
        interp = cv2.INTER_AREA if (w > W or h > H) else cv2.INTER_LINEAR
        resized = cv2.resize(image, (W, H), interpolation=interp)
        return resized, RoiTransform(x, y, w, h, W / w, H / h, w0, h0)


def map_to_original(pixel_map: np.ndarray, tr: RoiTransform) -> np.ndarray:
    """A [H, W] map in network-input coordinates -> [original_h, original_w], zero outside the ROI."""
    out = np.zeros((tr.original_h, tr.original_w), dtype=np.float32)
    roi_map = cv2.resize(pixel_map.astype(np.float32), (tr.roi_w, tr.roi_h), interpolation=cv2.INTER_LINEAR)
    out[tr.roi_y:tr.roi_y + tr.roi_h, tr.roi_x:tr.roi_x + tr.roi_w] = roi_map
    return out
