"""A discriminator trained against synthetic anomalies (SimpleNet, Liu et al., CVPR 2023).

The engine runs backbone + the trained head (engines/backbones/heads.py ``discriminator``: a
linear feature adaptor and a 2-layer MLP, as 1x1 convs) as one network whose output
``patch_scores`` [N, 1, h, w] is each patch's logit of being anomalous. It was trained on golden
patches (normal) against the same patches with Gaussian noise added in the adaptor's space
(anomalous): calibration/methods/discriminator.py. Image score = the largest patch logit; pixel
maps upsampled and smoothed. Arrays: the head's weights ``head.*``.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.methods.base import (Count, Dim, EngineHead, HeadDescription, HeadParams, HeadState, MethodConfig,
                                    ScoreMap, score_head_output)
from inspector.methods.training_config import TrainingConfig

NAME = "discriminator"
HEAD = EngineHead(kind="discriminator")


class DiscriminatorTraining(TrainingConfig):
    """TrainingConfig with this method's defaults, so a file that sets one field (``epochs: 20``)
    keeps the others. The step count (epochs x max_patches / batch_size) matters: far more steps
    overfit the noise boundary (docs/BENCHMARKS.md, issue 13)."""

    epochs: int = Field(12, ge=1, le=10_000)
    batch_size: int = Field(2048, ge=1)
    patience: int = Field(3, ge=1)
    max_patches: Optional[int] = Field(60_000, ge=1000)  # drawn exactly (repeats when fewer); None: all


class DiscriminatorSection(MethodConfig):
    """Sizes of the head and how its synthetic anomalies are made."""

    adapt_dim: Optional[int] = Field(None, ge=2, le=4096)  # None: the backbone's feature dim D
    hidden_dim: int = Field(256, ge=2, le=4096)
    # Gaussian noise std in the adaptor's space, which starts as the standardised features
    # (golden std 1 per channel); SimpleNet's own 0.015 is for its unstandardised features.
    noise_std: float = Field(0.25, gt=0.0, le=100.0)
    margin: float = Field(0.5, gt=0.0, le=100.0)  # SimpleNet's truncated-L1 target |logit| >= margin
    # train the adaptor with the discriminator (SimpleNet) or keep it the identity
    train_adaptor: bool = True
    training: DiscriminatorTraining = DiscriminatorTraining()


class Config(MethodConfig):
    """Per-patch logit of a discriminator trained against synthetic anomalies (pixel maps)."""

    type: Literal["discriminative"] = "discriminative"
    method: Literal["discriminator"] = "discriminator"
    discriminator: DiscriminatorSection = DiscriminatorSection()
    smoothing_sigma: float = Field(4.0, ge=0.0)


class DiscriminatorHeadDescription(HeadDescription):
    kind: Literal["discriminator"] = "discriminator"
    adapt_dim: Dim
    hidden_dim: Dim


class Params(HeadParams):
    method: Literal["discriminator"] = "discriminator"
    head: DiscriminatorHeadDescription
    noise_std: Optional[float] = Field(None, gt=0.0)
    margin: Optional[float] = Field(None, gt=0.0)
    patches_seen: Count = None


State = HeadState  # params: Params, head_weights: {"head.<state_dict key>": float32}


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    """features[output_name]: float32 [N, 1, h, w] anomaly logits."""
    return score_head_output(features, state.params.output_name, input_hw, state.params.smoothing_sigma)
