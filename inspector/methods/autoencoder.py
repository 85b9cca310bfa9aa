"""A feature autoencoder: how badly an autoencoder trained on golden features rebuilds a patch.

The engine runs backbone + the autoencoder (engines/backbones/heads.py ``autoencoder``) as one
network whose output ``patch_scores`` [N, 1, h, w] is each patch's mean squared reconstruction
error over the (standardised) feature channels. Image score = the largest patch error; pixel
maps upsampled and smoothed. Arrays: the head's weights ``head.*``.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.methods.base import (Count, Dim, EngineHead, HeadDescription, HeadParams, HeadState, MethodConfig,
                                    ScoreMap, score_head_output)
from inspector.methods.training_config import TrainingConfig

NAME = "autoencoder"
HEAD = EngineHead(kind="autoencoder")


class AutoencoderConfig(MethodConfig):
    """A small convolutional autoencoder over the standardised backbone feature map (stride 8):
    1x1 conv to widths[0], 3x3 stride-2 conv to widths[1], 3x3 conv to the bottleneck; decoder
    3x3 conv, upsampling, 1x1 convs back (engines/backbones/heads.py)."""

    widths: tuple[int, int] = (128, 64)
    bottleneck: int = Field(32, ge=2, le=1024)
    training: TrainingConfig = TrainingConfig(epochs=60, batch_size=4, lr=2e-3, patience=8)


class Config(MethodConfig):
    """Per-patch reconstruction error (mean squared error over channels)."""

    ignored_sections = ("fanogan", "anoddpm")
    type: Literal["reconstruction"] = "reconstruction"
    method: Literal["autoencoder"] = "autoencoder"
    autoencoder: AutoencoderConfig = AutoencoderConfig()
    smoothing_sigma: float = Field(4.0, ge=0.0)


class AutoencoderHeadDescription(HeadDescription):
    kind: Literal["autoencoder"] = "autoencoder"
    widths: list[Dim] = Field(min_length=2, max_length=2)
    bottleneck: Dim


class Params(HeadParams):
    method: Literal["autoencoder"] = "autoencoder"
    head: AutoencoderHeadDescription
    error: Optional[str] = None  # what the output measures, in words
    images_seen: Count = None


State = HeadState  # params: Params, head_weights: {"head.<state_dict key>": float32}


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    """features[output_name]: float32 [N, 1, h, w] reconstruction errors."""
    return score_head_output(features, state.params.output_name, input_hw, state.params.smoothing_sigma)
