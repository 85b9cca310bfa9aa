"""The Scorer interface and the pieces every map-producing scorer shares."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Protocol

import cv2
import numpy as np


@dataclass
class ScoreMap:
    """A batch's scores. image_scores: float32 [N]. patch_maps: float32 [N, h, w], one score per
    feature-map cell, or None for image-level scorers.

    Pixel maps (upsampled to ``input_hw`` and smoothed) are made on request, for one frame or
    for the whole batch: the daemon needs them only for the frames it draws or cuts into regions (the fails),
    and at 20 frames/s making them for every pass cost 0.3-0.5 ms a frame for nothing."""

    image_scores: np.ndarray
    patch_maps: Optional[np.ndarray] = None
    input_hw: tuple[int, int] = (0, 0)
    sigma: float = 0.0

    def pixel_map(self, k: int) -> Optional[np.ndarray]:
        """float32 [H, W] for frame ``k`` (made on each call); None for image-level scorers."""
        if self.patch_maps is None:
            return None
        return upsample_and_smooth(self.patch_maps[k:k + 1], self.input_hw, self.sigma)[0]

    @cached_property
    def pixel_maps(self) -> Optional[np.ndarray]:
        """float32 [N, H, W] for the whole batch (calibration, benchmarks), or None; made once."""
        if self.patch_maps is None:
            return None
        return upsample_and_smooth(self.patch_maps, self.input_hw, self.sigma)


class Scorer(Protocol):
    """Turns engine outputs into scores. ``features``: {name: float32 [N, C, h, w]};
    ``input_hw``: the network input (H, W) the pixel maps are returned at."""

    family: str

    def score(self, features: dict[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap: ...


def upsample_and_smooth(patch_maps: np.ndarray, input_hw: tuple[int, int], sigma: float) -> np.ndarray:
    """[N, h, w] patch scores -> [N, H, W] pixel maps: bilinear upsampling then a Gaussian blur
    (PatchCore's sigma=4), so a map can be thresholded into regions and drawn as a heatmap."""
    H, W = input_hw
    out = np.empty((len(patch_maps), H, W), dtype=np.float32)
    for i, m in enumerate(patch_maps):
        up = cv2.resize(m.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.GaussianBlur(up, (0, 0), sigma) if sigma > 0 else up
    return out


def score_patch_maps(maps: np.ndarray, input_hw: tuple[int, int], sigma: float,
                     image_scores: np.ndarray | None = None) -> ScoreMap:
    """[N, h, w] patch scores -> ScoreMap: image score = the largest patch score (unless the
    scorer has its own); pixel maps upsampled and smoothed when asked for."""
    if image_scores is None:
        image_scores = maps.reshape(len(maps), -1).max(axis=1)
    return ScoreMap(image_scores.astype(np.float32), np.asarray(maps, np.float32), tuple(input_hw), float(sigma))
