"""Deep SVDD (Ruff et al., ICML 2018) on frozen backbone patch features.

The engine runs backbone + the trained projection head (engines/backbones/heads.py ``svdd``) as
one network whose output ``patch_scores`` [N, 1, h, w] is each patch's squared distance to the
centre c. Soft-boundary states subtract R^2 (so > 0 means outside). Image score = the largest
patch score; pixel maps upsampled and smoothed. Arrays: the head's weights ``head.*``.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.methods.base import (Count, Dim, EngineHead, HeadDescription, HeadParams, HeadState, MethodConfig,
                                    ScoreMap, score_head_output)
from inspector.methods.training_config import TrainingConfig

NAME = "deep_svdd"
HEAD = EngineHead(kind="svdd")


class DeepSvddConfig(MethodConfig):
    """Bias-free 1x1 convs projecting each patch feature; trained towards a centre."""

    hidden_dims: tuple[int, ...] = (256,)
    out_dim: int = Field(64, ge=2, le=1024)
    objective: Literal["one_class", "soft_boundary"] = "one_class"
    nu: float = Field(0.1, gt=0.0, le=1.0)  # soft_boundary: share of golden patches allowed outside R
    centre_eps: float = Field(0.1, gt=0.0)  # centre coordinates nearer 0 than this become +-eps
    training: TrainingConfig = TrainingConfig()


class Config(MethodConfig):
    """Patch distance to a learnt centre (pixel maps)."""

    ignored_sections = ("ocsvm",)
    type: Literal["hypersphere"] = "hypersphere"
    method: Literal["deep_svdd"] = "deep_svdd"
    deep_svdd: DeepSvddConfig = DeepSvddConfig()
    smoothing_sigma: float = Field(4.0, ge=0.0)


class SvddHeadDescription(HeadDescription):
    kind: Literal["svdd"] = "svdd"
    hidden_dims: list[Dim]
    out_dim: Dim


class Params(HeadParams):
    method: Literal["deep_svdd"] = "deep_svdd"
    head: SvddHeadDescription
    radius_sq: float = Field(0.0, ge=0.0)  # soft_boundary's R^2 (0: one_class)
    objective: Optional[Literal["one_class", "soft_boundary"]] = None
    nu: Optional[float] = Field(None, gt=0.0, le=1.0)
    patches_seen: Count = None


State = HeadState  # params: Params, head_weights: {"head.<state_dict key>": float32}


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    """features[output_name]: float32 [N, 1, h, w] squared distances to the centre."""
    p = state.params
    return score_head_output(features, p.output_name, input_hw, p.smoothing_sigma, p.radius_sq)
