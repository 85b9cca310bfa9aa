"""Fitting the feature flow (inspector/methods/flow.py): maximum likelihood on golden feature maps.

Before training, two fixed parts are set from the golden features: the projection (PCA
whitening of the standardised patches to ``channels``: the flow starts at a unit Gaussian of the
main components, so the untrained flow already scores a Mahalanobis distance) and one random
orthogonal channel mixing per block (seeded; log-determinant 0). Then the couplings are trained
on whole maps (their 3x3 subnets need the neighbours) with the shared loop: Adam, early stopping
on the mean NLL of held-out golden images.
"""
from __future__ import annotations

import numpy as np
import torch

from calibration.methods import Progress
from calibration.methods.split import split_rows
from calibration.methods.training import (deterministic, feature_stats, standardised_head, train,
                                         train_val_tensors, training_device)
from engines.backbones.flow import FeatureFlow
from engines.backbones.heads import head_arrays
from inspector.methods import flow
from inspector.methods.base import TrainingSummary

_MAX_STAT_PATCHES = 200_000  # patches for the mean/std and the covariance (seeded subsample)


def whitening(patches: np.ndarray, channels: int) -> tuple[np.ndarray, float]:
    """Standardised patches float32 [P, D] -> (projection float32 [C, D] onto the top C principal
    components, each scaled to unit variance; the share of variance they hold)."""
    x = patches.astype(np.float64)
    cov = x.T @ x / max(len(x) - 1, 1)
    eigval, eigvec = np.linalg.eigh(cov)  # ascending
    eigval, eigvec = eigval[::-1][:channels], eigvec[:, ::-1][:, :channels]
    floor = max(1e-6, 1e-4 * float(eigval[0]))  # a (near) constant direction must not divide by 0
    kept = float(eigval.sum() / max(np.trace(cov), 1e-12))
    return (eigvec / np.sqrt(np.maximum(eigval, floor))).T.astype(np.float32), min(kept, 1.0)


def random_rotations(blocks: int, channels: int, seed: int) -> np.ndarray:
    """float32 [blocks, C, C] random orthogonal matrices (QR of Gaussians, signs fixed)."""
    rng = np.random.default_rng(seed)
    out = np.empty((blocks, channels, channels), np.float32)
    for k in range(blocks):
        q, r = np.linalg.qr(rng.standard_normal((channels, channels)))
        out[k] = q * np.sign(np.diag(r))
    return out


def fit(features: np.ndarray, config: flow.Config, seed: int, progress: Progress) -> flow.State:
    """features float32 [N, D, h, w] -> the state: the head's description and weights (``head.*``)."""
    f = config.flow
    n, d, h, w = features.shape
    channels = min(f.channels, d)
    patches = features.transpose(0, 2, 3, 1).reshape(-1, d)
    rng = np.random.default_rng(seed)
    if len(patches) > _MAX_STAT_PATCHES:
        patches = patches[np.sort(rng.choice(len(patches), _MAX_STAT_PATCHES, replace=False))]
    mean, std = feature_stats(patches)
    projection, kept = whitening((patches - mean) / std, channels)
    tr, va = split_rows(n, f.training.val_share, seed)
    dev = training_device()
    with deterministic(seed, f.training.threads):
        model = FeatureFlow(d, channels, f.blocks, f.hidden, f.clamp)
        model.projection.copy_(torch.from_numpy(projection))
        model.mixing.copy_(torch.from_numpy(random_rotations(f.blocks, channels, seed)))
        model = standardised_head(model, mean, std, dev)
        train_x, val_x = train_val_tensors(features, tr, va, dev)
        report = train(model, lambda m, b: m(b).mean(), train_x, val_x, f.training, seed,
                       progress=progress.update, total=progress.total)
    model = model.cpu()
    description = flow.FlowHeadDescription(in_dim=int(d), channels=int(channels), blocks=int(f.blocks),
                                           hidden=int(f.hidden), clamp=float(f.clamp))
    params = flow.Params(head=description, smoothing_sigma=config.smoothing_sigma, images_seen=int(n),
                         feature_dim=int(d), explained_variance=round(kept, 6),
                         training=TrainingSummary(**report.to_json()))
    return flow.State(params, head_arrays(model))
