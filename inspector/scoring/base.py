"""The Scorer interface and the pieces every map-producing scorer shares."""
from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from inspector.types import ScoreMap


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
    scorer has its own), pixel maps upsampled and smoothed."""
    if image_scores is None:
        image_scores = maps.reshape(len(maps), -1).max(axis=1)
    return ScoreMap(image_scores.astype(np.float32), upsample_and_smooth(maps, input_hw, sigma))
