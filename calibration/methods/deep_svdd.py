"""Fitting Deep SVDD (inspector/methods/deep_svdd.py; Ruff et al., ICML 2018) on frozen backbone
patch features: a bias-free 1x1-conv projection trained to pull golden patches towards a centre c.

c is the mean projection of the training patches at initialisation, with coordinates nearer 0
than ``centre_eps`` pushed to +-eps (a zero coordinate is trivially matched by zero weights).
Objectives: ``one_class`` minimises the mean squared distance to c; ``soft_boundary`` minimises
R^2 + 1/nu * mean(max(0, d^2 - R^2)), R set after each epoch to the (1 - nu) quantile of the
training distances (the paper's line search over R). Weight decay is Adam's.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from calibration.methods import Progress
from calibration.methods.split import split_rows
from calibration.methods.training import (deterministic, feature_stats, standardised_head, train,
                                         train_val_tensors, training_device)
from engines.backbones.heads import SvddHead, head_arrays
from inspector.methods import deep_svdd
from inspector.methods.base import TrainingSummary


def _as_maps(patches: torch.Tensor) -> torch.Tensor:
    """[P, D] -> [1, D, P, 1]: a 1x1 conv over this is one GEMM."""
    return patches.t().reshape(1, patches.shape[1], patches.shape[0], 1)


def _in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 65536) -> torch.Tensor:
    """fn over rows of ``x`` in chunks (bounded memory), results concatenated."""
    return torch.cat([fn(x[s:s + size]) for s in range(0, len(x), size)])


def fit(features: np.ndarray, config: deep_svdd.Config, seed: int, progress: Progress) -> deep_svdd.State:
    """features float32 [N, D, h, w] -> the state: the head's description and weights (``head.*``),
    R^2 for soft_boundary. Patches are subsampled to training.max_patches (seeded)."""
    c = config.deep_svdd
    n, d, h, w = features.shape
    patches = features.transpose(0, 2, 3, 1).reshape(-1, d)
    rng = np.random.default_rng(seed)
    if c.training.max_patches and len(patches) > c.training.max_patches:
        patches = patches[np.sort(rng.choice(len(patches), c.training.max_patches, replace=False))]
    patches = np.ascontiguousarray(patches, dtype=np.float32)
    mean, std = feature_stats(patches)
    tr, va = split_rows(len(patches), c.training.val_share, seed)
    dev = training_device()
    with deterministic(seed, c.training.threads):
        head = standardised_head(SvddHead(d, tuple(c.hidden_dims), c.out_dim), mean, std, dev)
        train_x, val_x = train_val_tensors(patches, tr, va, dev)
        with torch.no_grad():
            centre = _in_chunks(lambda b: head.embed(_as_maps(b)).flatten(2).squeeze(0).t(), train_x).mean(0)
            small = centre.abs() < c.centre_eps
            centre[small & (centre < 0)] = -c.centre_eps
            centre[small & (centre >= 0)] = c.centre_eps
            head.centre.copy_(centre.view(1, -1, 1, 1))
        radius_sq = torch.zeros((), device=dev)
        soft = c.objective == "soft_boundary"

        def loss_fn(module: SvddHead, batch: torch.Tensor) -> torch.Tensor:
            dist = module(_as_maps(batch)).flatten()
            if soft:
                return radius_sq + torch.relu(dist - radius_sq).mean() / c.nu
            return dist.mean()

        def update_radius(module: SvddHead, epoch: int) -> None:
            if soft:
                with torch.no_grad():
                    dist = _in_chunks(lambda b: module(_as_maps(b)).flatten(), train_x)
                    radius_sq.fill_(float(torch.quantile(dist[:1_000_000], 1.0 - c.nu)))

        report = train(head, loss_fn, train_x, val_x, c.training, seed, on_epoch_end=update_radius,
                       progress=progress.update, total=progress.total)
    head = head.cpu()
    description = deep_svdd.SvddHeadDescription(in_dim=int(d), hidden_dims=[int(v) for v in c.hidden_dims],
                                                out_dim=int(c.out_dim))
    params = deep_svdd.Params(head=description, objective=c.objective, nu=c.nu,
                              radius_sq=float(radius_sq) if soft else 0.0, smoothing_sigma=config.smoothing_sigma,
                              patches_seen=int(len(patches)), feature_dim=int(d),
                              training=TrainingSummary(**report.to_json()))
    return deep_svdd.State(params, head_arrays(head))
