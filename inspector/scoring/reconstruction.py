"""Reconstruction scoring: how badly an autoencoder trained on golden features rebuilds a patch.

The engine runs backbone + autoencoder as one network whose output ``patch_scores``
[N, 1, h, w] is each patch's mean squared reconstruction error over the (standardised)
feature channels. Image score = the largest patch error; pixel maps upsampled and smoothed
like PatchCore's.
"""
from __future__ import annotations

import numpy as np

from inspector.scoring.base import ScoreMap, score_patch_maps


class AutoencoderScorer:
    family = "reconstruction"

    def __init__(self, *, smoothing_sigma: float = 4.0, output_name: str = "patch_scores"):
        self.sigma = float(smoothing_sigma)
        self.output_name = output_name

    @classmethod
    def from_bundle(cls, params: dict, arrays: dict[str, np.ndarray]) -> "AutoencoderScorer":
        return cls(smoothing_sigma=params.get("smoothing_sigma", 4.0), output_name=params.get("output_name", "patch_scores"))

    def score(self, features: dict[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
        return score_patch_maps(features[self.output_name][:, 0].astype(np.float32), input_hw, self.sigma)
