"""f-AnoGAN (Schlegl et al., Medical Image Analysis 2019) over frozen backbone patch features.

A GAN learns the golden patch features (one sample = one standardised patch feature vector);
an encoder then maps a feature to the latent code whose generated feature rebuilds it (izi_f
training: rebuild error plus the discriminator-feature error). Instead of AnoGAN's per-frame
search of the latent code (hundreds of backprop steps; only in benchmarks/bench_fanogan.py),
the encoder finds it in one forward pass, so the engine runs backbone + encoder + generator +
discriminator features (engines/backbones/heads.py ``fanogan``) as one network whose output
``patch_scores`` [N, 1, h, w] is each patch's izi_f residual. Image score = the largest patch
residual; pixel maps upsampled and smoothed. Arrays: the head's weights ``head.*``.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.methods.base import (Count, Dim, EngineHead, HeadDescription, HeadParams, HeadState, MethodConfig,
                                    ScoreMap, score_head_output)

NAME = "fanogan"
HEAD = EngineHead(kind="fanogan")


class FanoganConfig(MethodConfig):
    """Sizes and the two training phases (WGAN-GP, then the izi_f encoder), in steps of
    ``batch_size`` golden patches sampled from at most ``max_patches``."""

    latent_dim: int = Field(32, ge=2, le=1024)
    hidden: int = Field(128, ge=8, le=4096)
    disc_hidden: int = Field(128, ge=8, le=4096)
    kappa: float = Field(1.0, ge=0.0)  # weight of the discriminator-feature residual (per unit of its golden energy)
    gan_steps: int = Field(1000, ge=1)  # generator updates (each after n_critic critic updates)
    n_critic: int = Field(3, ge=1)
    gp_weight: float = Field(10.0, ge=0.0)  # WGAN-GP gradient penalty
    encoder_steps: int = Field(1000, ge=1)
    batch_size: int = Field(256, ge=2)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    encoder_lr: float = Field(1e-3, gt=0.0, le=1.0)
    max_patches: int = Field(200_000, ge=1000)
    threads: int = Field(1, ge=0, le=256)  # torch CPU threads while training (0: torch's default)


class Config(MethodConfig):
    """Per-patch izi_f residual of a feature GAN with an encoder."""

    ignored_sections = ("autoencoder", "anoddpm")
    type: Literal["reconstruction"] = "reconstruction"
    method: Literal["fanogan"] = "fanogan"
    fanogan: FanoganConfig = FanoganConfig()
    smoothing_sigma: float = Field(4.0, ge=0.0)


class FanoganHeadDescription(HeadDescription):
    kind: Literal["fanogan"] = "fanogan"
    latent_dim: Dim
    hidden: Dim
    disc_hidden: Dim


class Params(HeadParams):
    method: Literal["fanogan"] = "fanogan"
    head: FanoganHeadDescription
    kappa: Optional[float] = Field(None, ge=0.0)  # as configured (the head's buffer holds it over the feature energy)
    patches_seen: Count = None
    gan_steps: Count = None
    encoder_steps: Count = None
    final_losses: Optional[dict[str, float]] = None  # critic, generator, encoder at the end


State = HeadState  # params: Params, head_weights: {"head.<state_dict key>": float32}


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    """features[output_name]: float32 [N, 1, h, w] izi_f residuals."""
    return score_head_output(features, state.params.output_name, input_hw, state.params.smoothing_sigma)
