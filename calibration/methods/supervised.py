"""Fitting the supervised method (inspector/methods/supervised.py): PatchCore's fit on the golden
features (calibration/methods/patchcore.py, unchanged), then a patch classifier trained on golden
(label 0) vs labelled defect images (label 1).

Defect images have no masks, so the loss is at image level: an image's logit is the mean of its
top_k patch logits (multiple-instance learning), binary cross-entropy weighted so both classes
count alike (pos_weight = golden / defect images), Adam, early stopping on a stratified held-out
share (calibration/methods/training.py's loop).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from calibration.methods import Progress
from calibration.methods import patchcore as patchcore_fit
from calibration.methods.split import split_rows
from calibration.methods.training import deterministic, feature_stats, train, training_device
from inspector.errors import InspectorError
from inspector.methods import patchcore, supervised
from inspector.methods.base import TrainingSummary

SCALE_IMAGES = 64  # golden images whose patch distances set pc_scale


class PatchClassifier(nn.Module):
    """Standardised patch feature -> hidden (ReLU) -> one logit, per patch of [N, D, h, w]."""

    def __init__(self, dim: int, hidden: int, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D, h, w] -> patch logits [N, h*w]."""
        p = (x.flatten(2).transpose(1, 2) - self.mean) / self.std
        return self.fc2(F.relu(self.fc1(p))).squeeze(-1)

    def arrays(self) -> dict[str, np.ndarray]:
        def np32(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().float().numpy().copy()

        return {"supervised_mean": np32(self.mean), "supervised_std": np32(self.std),
                "supervised_w1": np32(self.fc1.weight.t()), "supervised_b1": np32(self.fc1.bias),
                "supervised_w2": np32(self.fc2.weight[0]), "supervised_b2": np32(self.fc2.bias)}


def _top_k_mean(logits: torch.Tensor, k: int) -> torch.Tensor:
    return logits.topk(min(k, logits.shape[1]), dim=1).values.mean(1)


def _pc_scale(state: patchcore.State, features: np.ndarray, quantile: float, seed: int) -> float:
    rows = np.random.default_rng(seed).permutation(len(features))[:SCALE_IMAGES]
    dist, _, _ = patchcore.patch_scores(state, np.ascontiguousarray(features[np.sort(rows)], np.float32))
    return max(float(np.quantile(dist, quantile)), 1e-6)


def fit(features: np.ndarray, config: supervised.Config, seed: int, progress: Progress,
        defects: Optional[np.ndarray] = None) -> supervised.State:
    """features float32 [N, D, h, w] golden, defects float32 [M, D, h, w] labelled defect images
    -> the state: PatchCore's bank and the classifier's weights."""
    if defects is None or len(defects) == 0:
        raise InspectorError("scorer supervised trains on labelled defects: pass calibrate --defects DIR "
                             "(a folder of defect images), or pick an unsupervised scorer")
    if defects.shape[1:] != features.shape[1:]:
        raise InspectorError(f"scorer supervised: defect features {list(defects.shape[1:])} differ from the "
                             f"golden ones {list(features.shape[1:])}")
    c = config.classifier
    pc = patchcore_fit.fit(features, config.patchcore_config(), seed, progress)
    scale = _pc_scale(pc, features, c.scale_quantile, seed)

    n_g, n_d, d = len(features), len(defects), features.shape[1]
    data = torch.from_numpy(np.ascontiguousarray(np.concatenate([features, defects]), np.float32))
    labels = torch.cat([torch.zeros(n_g), torch.ones(n_d)])
    tr_g, va_g = split_rows(n_g, c.training.val_share, seed)
    tr_d, va_d = split_rows(n_d, c.training.val_share, seed + 1)
    tr = torch.from_numpy(np.concatenate([tr_g, tr_d + n_g]))
    va = torch.from_numpy(np.concatenate([va_g, va_d + n_g]))
    pos_weight = torch.tensor(max(len(tr_g), 1) / max(len(tr_d), 1))
    sample = data[torch.from_numpy(np.random.default_rng(seed).permutation(n_g)[:SCALE_IMAGES])]
    mean, std = feature_stats(sample.permute(0, 2, 3, 1).reshape(-1, d).numpy())
    dev = training_device()
    with deterministic(seed, c.training.threads):
        model = PatchClassifier(d, c.hidden, mean, std).to(dev)

        def loss_fn(module: PatchClassifier, rows: torch.Tensor) -> torch.Tensor:
            logits = _top_k_mean(module(data[rows].to(dev)), c.top_k)
            return F.binary_cross_entropy_with_logits(logits, labels[rows].to(dev), pos_weight=pos_weight.to(dev))

        report = train(model, loss_fn, tr, va, c.training, seed, progress=progress.update, total=progress.total)
    params = supervised.Params(smoothing_sigma=config.smoothing_sigma, patchcore=pc.params, pc_scale=scale,
                               weight=c.weight, top_k=c.top_k, defect_images=int(n_d), golden_images=int(n_g),
                               feature_dim=int(d), training=TrainingSummary(**report.to_json()))
    return supervised.State(params, pc, model.cpu().arrays())
