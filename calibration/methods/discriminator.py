"""Fitting the discriminator (inspector/methods/discriminator.py; SimpleNet, Liu et al., CVPR 2023)
on frozen backbone patch features, from golden patches only.

Each step adapts a batch of golden patches (standardised, then the linear adaptor, initialised
to the identity so ``noise_std`` is in golden standard deviations), makes their anomalous twins
by adding Gaussian noise there, and trains adaptor + discriminator with SimpleNet's truncated L1:
mean(relu(margin + logit(normal))) + mean(relu(margin - logit(noisy))), i.e. normal patches are
pushed below -margin and noisy ones above +margin, and no further (no overconfident logits).
Early stopping on a held-out share of the patches (calibration/methods/training.py).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from calibration.methods import Progress
from calibration.methods.split import split_rows
from calibration.methods.training import (deterministic, feature_stats, standardised_head, train,
                                         train_val_tensors, training_device)
from engines.backbones.heads import DiscriminatorHead, head_arrays
from inspector.methods import discriminator
from inspector.methods.base import TrainingSummary


def _as_maps(patches: torch.Tensor) -> torch.Tensor:
    """[P, D] -> [1, D, P, 1]: a 1x1 conv over this is one GEMM."""
    return patches.t().reshape(1, patches.shape[1], patches.shape[0], 1)


def truncated_l1(head: DiscriminatorHead, patches: torch.Tensor, noise_std: float, margin: float,
                 negatives: Optional[torch.Tensor] = None) -> torch.Tensor:
    """SimpleNet's loss on golden ``patches`` [P, D] and their noisy twins in the adaptor's space
    (plus, for research, ``negatives`` [Q, D]: patches of image-space synthetic defects)."""
    z = head.adapt(_as_maps(patches))
    noisy = z + noise_std * torch.randn_like(z)
    loss = torch.relu(margin + head.discriminate(z)).mean() + torch.relu(margin - head.discriminate(noisy)).mean()
    if negatives is not None:
        loss = loss + torch.relu(margin - head(_as_maps(negatives))).mean()
    return loss


def _identity_adaptor(head: DiscriminatorHead) -> None:
    """adaptor = identity where its dims allow (so the noise scale means golden stds); else torch's init."""
    w = head.adaptor.weight
    if w.shape[0] == w.shape[1]:
        with torch.no_grad():
            w.copy_(torch.eye(w.shape[0], dtype=w.dtype).view_as(w))
            head.adaptor.bias.zero_()


def fit(features: np.ndarray, config: discriminator.Config, seed: int, progress: Progress) -> discriminator.State:
    """features float32 [N, D, h, w] -> the state: the head's description and weights (``head.*``).
    Patches are drawn to training.max_patches (seeded; with repeats when there are fewer)."""
    return fit_with_negatives(features, config, seed, progress)


def fit_with_negatives(features: np.ndarray, config: discriminator.Config, seed: int, progress: Progress,
                       negatives: Optional[np.ndarray] = None) -> discriminator.State:
    """``fit``, with optional known-anomalous patches float32 [Q, D] (benchmarks/bench_discriminator.py
    --synthetic: features of image-space synthetic defects); each step also sees as many of them
    as golden patches, drawn at random."""
    c = config.discriminator
    n, d, h, w = features.shape
    patches = features.transpose(0, 2, 3, 1).reshape(-1, d)
    rng = np.random.default_rng(seed)
    if c.training.max_patches and len(patches) != c.training.max_patches:
        # exactly max_patches rows, repeated when the golden set has fewer (each repeat gets its
        # own noise): the number of optimisation steps is then the same for every golden set
        # size, and the results depend on it (training far longer overfits the noise boundary)
        many = len(patches) > c.training.max_patches
        patches = patches[np.sort(rng.choice(len(patches), c.training.max_patches, replace=not many))]
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    mean, std = feature_stats(patches)
    tr, va = split_rows(len(patches), c.training.val_share, seed)
    adapt_dim = int(c.adapt_dim or d)
    dev = training_device()
    with deterministic(seed, c.training.threads):
        head = DiscriminatorHead(d, adapt_dim, c.hidden_dim)
        _identity_adaptor(head)
        head.adaptor.requires_grad_(c.train_adaptor)
        head = standardised_head(head, mean, std, dev)
        train_x, val_x = train_val_tensors(patches, tr, va, dev)
        neg = None if negatives is None else torch.from_numpy(np.ascontiguousarray(negatives, np.float32)).to(dev)

        def loss_fn(m: DiscriminatorHead, b: torch.Tensor) -> torch.Tensor:
            drawn = None if neg is None else neg[torch.randint(len(neg), (len(b),), device=dev)]
            return truncated_l1(m, b, c.noise_std, c.margin, drawn)

        report = train(head, loss_fn, train_x, val_x, c.training, seed, progress=progress.update,
                       total=progress.total)
    head = head.cpu()
    description = discriminator.DiscriminatorHeadDescription(in_dim=int(d), adapt_dim=adapt_dim,
                                                             hidden_dim=int(c.hidden_dim))
    params = discriminator.Params(head=description, noise_std=float(c.noise_std), margin=float(c.margin),
                                  smoothing_sigma=config.smoothing_sigma, patches_seen=int(len(patches)),
                                  feature_dim=int(d), training=TrainingSummary(**report.to_json()))
    return discriminator.State(params, head_arrays(head))
