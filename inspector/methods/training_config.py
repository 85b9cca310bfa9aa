"""The training section the trained-head methods share (Deep SVDD, the autoencoder)."""
from __future__ import annotations

from typing import Optional

from pydantic import Field

from inspector.methods.base import MethodConfig


class TrainingConfig(MethodConfig):
    """How a trained head (Deep SVDD projection, autoencoder) is fitted on golden features:
    Adam, mini-batches, early stopping on a held-out share of the golden data. CPU here,
    CUDA where torch sees one (calibration/methods/training.py)."""

    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(1024, ge=1)  # patches (deep_svdd) or feature maps (autoencoder)
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-6, ge=0.0)
    val_share: float = Field(0.1, gt=0.0, lt=0.5)  # held out for early stopping
    patience: int = Field(5, ge=1)  # epochs without validation improvement before stopping
    max_patches: Optional[int] = Field(200_000, ge=1000)  # deep_svdd: random patch subsample per fit
    # torch CPU threads while training (0: torch's default). These heads are small: one thread
    # avoids thread hand-off costs that dominate on a busy 2-core box (measured 9 ms vs 250 ms/step).
    threads: int = Field(1, ge=0, le=256)
