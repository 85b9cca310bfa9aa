"""PaDiM (Defard et al. 2021): a multivariate Gaussian of the patch features at every patch
position; a patch's score is its Mahalanobis distance to its position's Gaussian.

Arrays: ``padim_channels`` int64 [d] (the seeded random channel subset), ``padim_mean`` float32
[h*w, d], ``padim_inv_cov`` float32 [h*w, d, d] (inverse of cov + eps*I). The method assumes
aligned parts: the position grid is fixed by the network input size at calibration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field
from typing_extensions import Annotated

from inspector.methods.base import (Count, MethodConfig, MethodParams, ScoreMap, Sigma, StateInvalid, array,
                                    expect_shape, score_patch_maps)

NAME = "padim"
HEAD = None


class PadimConfig(MethodConfig):
    # channels kept (a seeded random subset of the feature channels, as in the paper);
    # None or >= the feature dim keeps all. Memory: h*w*n_channels^2*4 bytes of inverse covariance.
    n_channels: Optional[int] = Field(100, ge=2, le=1024)
    eps: float = Field(0.01, gt=0.0)  # covariance regularisation: cov + eps * I


class Config(MethodConfig):
    """A Gaussian per patch position over a random channel subset."""

    ignored_sections = ("coreset", "reweight", "reweight_neighbours", "global_context")
    type: Literal["memory_bank"] = "memory_bank"
    method: Literal["padim"] = "padim"
    padim: PadimConfig = PadimConfig()
    smoothing_sigma: float = Field(4.0, ge=0.0)


class Params(MethodParams):
    method: Literal["padim"] = "padim"
    grid_hw: list[Annotated[int, Field(ge=1)]] = Field(min_length=2, max_length=2)  # the patch grid h, w
    smoothing_sigma: Sigma = 4.0
    feature_name: str = "features"
    n_channels: Count = None
    eps: Optional[float] = Field(None, gt=0.0)
    images_seen: Count = None


@dataclass(frozen=True)
class State:
    params: Params
    channels: np.ndarray  # int64 [d]
    mean: np.ndarray  # float32 [h*w, d]
    inv_cov: np.ndarray  # float32 [h*w, d, d]

    def __post_init__(self):
        hw, d = int(np.prod(self.params.grid_hw)), len(self.channels)
        expect_shape(self.mean, "padim_mean", NAME, (hw, d))
        expect_shape(self.inv_cov, "padim_inv_cov", NAME, (hw, d, d))
        top = self.params.feature_dim
        if self.channels.min() < 0 or (top is not None and self.channels.max() >= top):
            raise StateInvalid(f"padim: 'padim_channels' names channels outside the {top}-channel features")

    @classmethod
    def from_bundle(cls, params: Params, arrays: Mapping[str, np.ndarray]) -> "State":
        return cls(params, array(arrays, "padim_channels", NAME, kind="i", ndim=1, dtype=np.int64),
                   array(arrays, "padim_mean", NAME, kind="f", ndim=2),
                   array(arrays, "padim_inv_cov", NAME, kind="f", ndim=3))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"padim_channels": self.channels, "padim_mean": self.mean, "padim_inv_cov": self.inv_cov}


def patch_scores(state: State, feats: np.ndarray) -> np.ndarray:
    """feats float32 [N, D, h, w] -> Mahalanobis distance maps float32 [N, h, w]."""
    n, _, h, w = feats.shape
    gh, gw = state.params.grid_hw
    if (h, w) != (gh, gw):
        raise ValueError(f"PaDiM bundle has a {gh}x{gw} patch grid, the features are {h}x{w}: the network "
                         f"input size differs from calibration; recalibrate")
    ch = state.channels
    x = feats[:, ch].reshape(n, len(ch), h * w).transpose(2, 0, 1)  # [hw, N, d]
    diff = x.astype(np.float32) - state.mean[:, None, :]
    m = np.matmul(diff, state.inv_cov)  # [hw, N, d]: one small GEMM per position
    d2 = np.einsum("knd,knd->kn", m, diff)
    return np.sqrt(np.maximum(d2, 0.0)).T.reshape(n, h, w).astype(np.float32)


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    return score_patch_maps(patch_scores(state, features[state.params.feature_name]), input_hw,
                            state.params.smoothing_sigma)
