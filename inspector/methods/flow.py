"""A normalizing flow on backbone features (FastFlow family; Yu et al., 2021): the negative
log-likelihood of each patch under a small flow trained by maximum likelihood on golden features.

The engine runs backbone + the flow (engines/backbones/flow.py, head kind ``flow``) as one
network whose output ``patch_scores`` [N, 1, h, w] is each position's NLL per channel
(0.5 * ||z||^2 - log|det|, divided by the flow's channels). Image score = the largest patch NLL;
pixel maps upsampled and smoothed. Arrays: the head's weights ``head.*`` (the fixed projection
and channel mixings among them).

Family ``flow``: a density model of the features, neither a bank of stored patches
(memory_bank), a distance to a centre (hypersphere) nor a rebuilt input (reconstruction); CS-Flow
or MSFlow would join it.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.methods.base import (Count, Dim, EngineHead, HeadDescription, HeadParams, HeadState, MethodConfig,
                                    ScoreMap, score_head_output)
from inspector.methods.training_config import TrainingConfig

NAME = "flow"
HEAD = EngineHead(kind="flow")


class FlowSection(MethodConfig):
    """The flow's shape: features standardised, projected by PCA whitening to ``channels``
    (fixed; fewer channels keep it cheap on a CPU), then ``blocks`` affine couplings whose subnets
    (conv, ReLU, conv with ``hidden`` channels) alternate 3x3 and 1x1 kernels."""

    channels: int = Field(64, ge=2, le=1024)  # capped at the feature dimension D
    blocks: int = Field(4, ge=1, le=32)
    hidden: int = Field(64, ge=1, le=2048)
    clamp: float = Field(2.0, gt=0.0, le=10.0)  # |log-scale| bound of each coupling (tanh soft clamp)
    training: TrainingConfig = TrainingConfig(epochs=20, batch_size=8, lr=1e-3, weight_decay=1e-5, patience=5)


class Config(MethodConfig):
    """Per-patch negative log-likelihood under a flow (pixel maps)."""

    type: Literal["flow"] = "flow"
    method: Literal["flow"] = "flow"
    flow: FlowSection = FlowSection()
    smoothing_sigma: float = Field(4.0, ge=0.0)


class FlowHeadDescription(HeadDescription):
    kind: Literal["flow"] = "flow"
    channels: Dim
    blocks: Dim
    hidden: Dim
    clamp: float = Field(gt=0.0, le=10.0)


class Params(HeadParams):
    method: Literal["flow"] = "flow"
    head: FlowHeadDescription
    explained_variance: Optional[float] = Field(None, ge=0.0, le=1.0)  # kept by the projection
    images_seen: Count = None


State = HeadState  # params: Params, head_weights: {"head.<state_dict key>": float32}


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    """features[output_name]: float32 [N, 1, h, w] negative log-likelihoods per channel."""
    return score_head_output(features, state.params.output_name, input_hw, state.params.smoothing_sigma)
