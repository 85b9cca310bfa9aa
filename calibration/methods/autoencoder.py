"""Fitting the feature autoencoder (inspector/methods/autoencoder.py): a small convolutional
autoencoder trained on standardised golden feature maps to minimise the mean squared
reconstruction error; early stopping on a held-out share of the golden images."""
from __future__ import annotations

import numpy as np

from calibration.methods import Progress
from calibration.methods.split import split_rows
from calibration.methods.training import (deterministic, feature_stats, standardised_head, train,
                                         train_val_tensors, training_device)
from engines.backbones.heads import FeatureAutoencoder, head_arrays
from inspector.methods import autoencoder
from inspector.methods.base import TrainingSummary


def fit(features: np.ndarray, config: autoencoder.Config, seed: int, progress: Progress) -> autoencoder.State:
    """features float32 [N, D, h, w] -> the state: the head's description and weights (``head.*``)."""
    a = config.autoencoder
    n, d, h, w = features.shape
    mean, std = feature_stats(features.transpose(0, 2, 3, 1).reshape(-1, d))
    tr, va = split_rows(n, a.training.val_share, seed)
    dev = training_device()
    with deterministic(seed, a.training.threads):
        model = standardised_head(FeatureAutoencoder(d, tuple(a.widths), a.bottleneck), mean, std, dev)
        train_x, val_x = train_val_tensors(features, tr, va, dev)
        report = train(model, lambda m, b: m(b).mean(), train_x, val_x, a.training, seed,
                       progress=progress.update, total=progress.total)
    model = model.cpu()
    description = autoencoder.AutoencoderHeadDescription(in_dim=int(d), widths=[int(v) for v in a.widths],
                                                         bottleneck=int(a.bottleneck))
    params = autoencoder.Params(head=description, smoothing_sigma=config.smoothing_sigma, images_seen=int(n),
                                feature_dim=int(d), training=TrainingSummary(**report.to_json()),
                                error="mean over channels of the squared error of standardised features")
    return autoencoder.State(params, head_arrays(model))
