"""Fitter for the feature autoencoder (reconstruction / autoencoder): a small convolutional
autoencoder trained on standardised golden feature maps to minimise the mean squared
reconstruction error; early stopping on a held-out share of the golden images."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from calibration.fitters.training import (deterministic, feature_stats, split_rows, standardised_head, train,
                                         train_val_tensors, training_device)
from engines.backbones.heads import HEAD_OUTPUT, FeatureAutoencoder, head_arrays


class AutoencoderFitter:
    scorer_type = "reconstruction"

    def __init__(self, config, seed: int = 0):
        self.config = config  # settings.ReconstructionScorerConfig
        self.seed = seed

    def head_description(self, in_dim: int) -> dict:
        a = self.config.autoencoder
        return {"kind": "autoencoder", "in_dim": int(in_dim), "widths": [int(v) for v in a.widths],
                "bottleneck": int(a.bottleneck), "arrays": "arrays.npz"}

    def fit(self, features: np.ndarray, progress: Optional[Callable[[int], None]] = None,
            total: Optional[Callable[[int], None]] = None) -> tuple[dict, dict[str, np.ndarray]]:
        """features float32 [N, D, h, w] -> (params with the head description, head.* arrays)."""
        a = self.config.autoencoder
        n, d, h, w = features.shape
        mean, std = feature_stats(features.transpose(0, 2, 3, 1).reshape(-1, d))
        tr, va = split_rows(n, a.training.val_share, self.seed)
        dev = training_device()
        with deterministic(self.seed, a.training.threads):
            model = standardised_head(FeatureAutoencoder(d, tuple(a.widths), a.bottleneck), mean, std, dev)
            train_x, val_x = train_val_tensors(features, tr, va, dev)
            report = train(model, lambda m, b: m(b).mean(), train_x, val_x, a.training, self.seed,
                           progress=progress, total=total)
        model = model.cpu()
        params = {"method": "autoencoder", "smoothing_sigma": self.config.smoothing_sigma, "output_name": HEAD_OUTPUT,
                  "head": self.head_description(d), "images_seen": int(n), "feature_dim": int(d),
                  "error": "mean over channels of the squared error of standardised features",
                  "training": report.to_json()}
        return params, head_arrays(model)
