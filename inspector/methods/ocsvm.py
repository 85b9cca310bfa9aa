"""One-class SVM (RBF) on the globally pooled feature map: image level only (no pixel maps).

Scored with numpy from the stored support vectors (scikit-learn's OneClassSVM decision
function): the daemon needs no scikit-learn and no pickle. Arrays (float64): ``ocsvm_support``
[S, F], ``ocsvm_dual_coef`` [S], ``ocsvm_intercept`` [1], ``ocsvm_gamma`` [1],
``ocsvm_scale_mean`` [F], ``ocsvm_scale_std`` [F] (F = D, or 2D with avg_max pooling).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional, Union

import numpy as np
from pydantic import Field

from inspector.methods.base import Count, MethodConfig, MethodParams, ScoreMap, StateInvalid, array, expect_shape

NAME = "ocsvm"
HEAD = None
Pooling = Literal["avg", "avg_max"]


class OcsvmConfig(MethodConfig):
    nu: float = Field(0.1, gt=0.0, le=1.0)
    gamma: Union[Literal["scale"], float] = "scale"
    pooling: Pooling = "avg_max"


class Config(MethodConfig):
    """Image-level one-class SVM, for few golden images."""

    ignored_sections = ("deep_svdd", "smoothing_sigma")
    type: Literal["hypersphere"] = "hypersphere"
    method: Literal["ocsvm"] = "ocsvm"
    ocsvm: OcsvmConfig = OcsvmConfig()


class Params(MethodParams):
    method: Literal["ocsvm"] = "ocsvm"
    pooling: Pooling = "avg_max"
    feature_name: str = "features"
    nu: Optional[float] = Field(None, gt=0.0, le=1.0)
    support_vectors: Count = None
    images_seen: Count = None


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


@dataclass(frozen=True)
class State:
    params: Params
    support: np.ndarray  # float64 [S, F]
    dual_coef: np.ndarray  # float64 [S]
    intercept: float
    gamma: float
    scale_mean: np.ndarray  # float64 [F]
    scale_std: np.ndarray  # float64 [F]
    support_sq: np.ndarray = field(init=False, repr=False, compare=False)  # constant: not recomputed per frame

    def __post_init__(self):
        s, f = self.support.shape
        expect_shape(self.dual_coef, "ocsvm_dual_coef", NAME, (s,))
        expect_shape(self.scale_mean, "ocsvm_scale_mean", NAME, (f,))
        expect_shape(self.scale_std, "ocsvm_scale_std", NAME, (f,))
        if not (np.isfinite(self.gamma) and self.gamma > 0 and np.isfinite(self.intercept)):
            raise StateInvalid(f"ocsvm: gamma {self.gamma} and intercept {self.intercept} must be finite, gamma > 0")
        object.__setattr__(self, "support_sq", (self.support * self.support).sum(1))

    @classmethod
    def from_bundle(cls, params: Params, arrays: Mapping[str, np.ndarray]) -> "State":
        def one(name: str) -> float:
            a = array(arrays, name, NAME, kind="f", ndim=1, dtype=np.float64)
            expect_shape(a, name, NAME, (1,))
            return float(a[0])

        return cls(params, array(arrays, "ocsvm_support", NAME, kind="f", ndim=2, dtype=np.float64),
                   array(arrays, "ocsvm_dual_coef", NAME, kind="f", ndim=1, dtype=np.float64),
                   one("ocsvm_intercept"), one("ocsvm_gamma"),
                   array(arrays, "ocsvm_scale_mean", NAME, kind="f", ndim=1, dtype=np.float64),
                   array(arrays, "ocsvm_scale_std", NAME, kind="f", ndim=1, dtype=np.float64))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"ocsvm_support": self.support, "ocsvm_dual_coef": self.dual_coef,
                "ocsvm_intercept": np.array([self.intercept], np.float64),
                "ocsvm_gamma": np.array([self.gamma], np.float64),
                "ocsvm_scale_mean": self.scale_mean, "ocsvm_scale_std": self.scale_std}


def embed(state: State, feats: np.ndarray) -> np.ndarray:
    """feats [N, D, h, w] -> the standardised pooled vectors the SVM was fitted on, float64."""
    return (pool_features(feats, state.params.pooling) - state.scale_mean) / state.scale_std


def decision(state: State, feats: np.ndarray) -> np.ndarray:
    return rbf_decision(embed(state, feats), state.support, state.dual_coef, state.intercept, state.gamma,
                        state.support_sq)


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    """Image score = -decision function: above 0 means outside the golden region."""
    return ScoreMap((-decision(state, features[state.params.feature_name])).astype(np.float32), None)
