"""Hypersphere scoring: how far a part lies from the golden parts' hypersphere.

- ``DeepSvddScorer`` (Deep SVDD, Ruff et al. 2018): the engine runs backbone + the trained
  projection head as one network whose output ``patch_scores`` [N, 1, h, w] is each patch's
  squared distance to the centre c. Soft-boundary bundles subtract R^2 (so > 0 means outside).
  Image score = the largest patch score; pixel maps as PatchCore's (upsampled, smoothed).
- ``OcsvmScorer``: a one-class RBF SVM on the globally pooled feature map, image level only
  (``pixel_maps`` is None). Scored with numpy from the stored support vectors: the daemon
  needs no scikit-learn and no pickle.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from inspector.scoring.base import ScoreMap, score_patch_maps


class DeepSvddScorer:
    family = "hypersphere"

    def __init__(self, *, radius_sq: float = 0.0, smoothing_sigma: float = 4.0, output_name: str = "patch_scores"):
        self.radius_sq = float(radius_sq)
        self.sigma = float(smoothing_sigma)
        self.output_name = output_name

    @classmethod
    def from_bundle(cls, params: dict, arrays: dict[str, np.ndarray]) -> "DeepSvddScorer":
        return cls(radius_sq=params.get("radius_sq", 0.0), smoothing_sigma=params.get("smoothing_sigma", 4.0),
                   output_name=params.get("output_name", "patch_scores"))

    def score(self, features: dict[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
        """features[output_name]: float32 [N, 1, h, w] squared distances to the centre."""
        maps = features[self.output_name][:, 0].astype(np.float32) - np.float32(self.radius_sq)
        return score_patch_maps(maps, input_hw, self.sigma)


def pool_features(feats: np.ndarray, pooling: str) -> np.ndarray:
    """feats float32 [N, D, h, w] -> [N, D] (avg) or [N, 2D] (avg then max), float64."""
    x = feats.astype(np.float64)
    avg = x.mean(axis=(2, 3))
    if pooling == "avg":
        return avg
    if pooling == "avg_max":
        return np.concatenate([avg, x.max(axis=(2, 3))], axis=1)
    raise ValueError(f"unknown pooling {pooling!r}; expected avg or avg_max")


def rbf_decision(x: np.ndarray, support: np.ndarray, dual_coef: np.ndarray, intercept: float,
                 gamma: float, support_sq: Optional[np.ndarray] = None) -> np.ndarray:
    """One-class SVM decision function sum_i a_i exp(-gamma |s_i - x|^2) + b, float64 [N]
    (positive inside the golden region), as scikit-learn's OneClassSVM.decision_function.
    support_sq: (support**2).sum(1), when the caller keeps it."""
    if support_sq is None:
        support_sq = (support * support).sum(1)
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ support.T + support_sq[None, :]
    return np.exp(-gamma * np.maximum(d2, 0.0)) @ dual_coef + intercept


class OcsvmScorer:
    family = "hypersphere"

    def __init__(self, support: np.ndarray, dual_coef: np.ndarray, intercept: float, gamma: float,
                 scale_mean: np.ndarray, scale_std: np.ndarray, *, pooling: str = "avg_max",
                 feature_name: str = "features"):
        self.support = np.asarray(support, np.float64)
        self.support_sq = (self.support * self.support).sum(1)  # constant: not recomputed per frame
        self.dual_coef = np.asarray(dual_coef, np.float64).ravel()
        self.intercept = float(intercept)
        self.gamma = float(gamma)
        self.scale_mean = np.asarray(scale_mean, np.float64)
        self.scale_std = np.asarray(scale_std, np.float64)
        self.pooling = pooling
        self.feature_name = feature_name

    @classmethod
    def from_bundle(cls, params: dict, arrays: dict[str, np.ndarray]) -> "OcsvmScorer":
        return cls(arrays["ocsvm_support"], arrays["ocsvm_dual_coef"], float(np.ravel(arrays["ocsvm_intercept"])[0]),
                   float(np.ravel(arrays["ocsvm_gamma"])[0]), arrays["ocsvm_scale_mean"], arrays["ocsvm_scale_std"],
                   pooling=params.get("pooling", "avg_max"), feature_name=params.get("feature_name", "features"))

    def embed(self, feats: np.ndarray) -> np.ndarray:
        """feats [N, D, h, w] -> the standardised pooled vectors the SVM was fitted on, float64."""
        return (pool_features(feats, self.pooling) - self.scale_mean) / self.scale_std

    def decision(self, feats: np.ndarray) -> np.ndarray:
        return rbf_decision(self.embed(feats), self.support, self.dual_coef, self.intercept, self.gamma,
                            self.support_sq)

    def score(self, features: dict[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
        """Image score = -decision function: above 0 means outside the golden region."""
        return ScoreMap((-self.decision(features[self.feature_name])).astype(np.float32), None)
