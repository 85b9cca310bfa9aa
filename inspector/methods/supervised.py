"""Supervised: a good-vs-defect patch classifier trained on labelled defect images, added to
PatchCore's anomaly score so a defect kind the classifier never saw still fails on its distance.

The classifier is a small MLP over each standardised backbone patch feature (what 1x1 convs
compute), trained with class-balanced binary cross-entropy on image labels: an image's logit is
the mean of its ``top_k`` largest patch logits (multiple-instance learning: the defect images come
without masks). Runtime (numpy, here):

- patch map = PatchCore distance / ``pc_scale`` + ``weight`` * sigmoid(patch logit);
- image score = the largest PatchCore distance / ``pc_scale`` + ``weight`` * sigmoid(image logit).

``pc_scale`` is a high quantile of golden patch distances to the bank, so both terms are of order 1.
The method needs defect images at calibration (``USES_DEFECTS``: ``calibrate --defects DIR``).

Arrays: PatchCore's (``memory_bank``, ``bank_knn_index``) and the classifier's ``supervised_mean``,
``supervised_std`` [D], ``supervised_w1`` [D, H], ``supervised_b1`` [H], ``supervised_w2`` [H],
``supervised_b2`` [1].
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.methods import patchcore
from inspector.methods.base import (Count, MethodConfig, MethodParams, ScoreMap, Sigma, StateInvalid, array,
                                    TrainingSummary, expect_shape, score_patch_maps)
from inspector.methods.training_config import TrainingConfig

NAME = "supervised"
HEAD = None
USES_DEFECTS = True  # fit(..., defects=) gets the features of calibrate --defects DIR
ARRAYS = ("supervised_mean", "supervised_std", "supervised_w1", "supervised_b1", "supervised_w2", "supervised_b2")


class ClassifierConfig(MethodConfig):
    """The patch classifier: D -> hidden (ReLU) -> 1 logit, Adam, class-balanced BCE."""

    hidden: int = Field(64, ge=1, le=4096)
    top_k: int = Field(4, ge=1)  # image logit = mean of the k largest patch logits
    weight: float = Field(0.5, ge=0.0, le=100.0)  # the classifier's share of the combined score (docs/BENCHMARKS.md)
    scale_quantile: float = Field(0.999, gt=0.5, lt=1.0)  # golden patch-distance quantile = pc_scale
    training: TrainingConfig = TrainingConfig(epochs=40, batch_size=32, lr=1e-3, patience=8, val_share=0.2)


class Config(MethodConfig):
    """PatchCore's distance plus a classifier trained on labelled defects."""

    ignored_sections = ()
    type: Literal["supervised"] = "supervised"
    method: Literal["supervised"] = "supervised"
    coreset: patchcore.CoresetConfig = patchcore.CoresetConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    smoothing_sigma: float = Field(4.0, ge=0.0)

    def patchcore_config(self) -> patchcore.Config:
        return patchcore.Config(coreset=self.coreset, smoothing_sigma=self.smoothing_sigma)


class Params(MethodParams):
    method: Literal["supervised"] = "supervised"
    smoothing_sigma: Sigma = 4.0
    patchcore: patchcore.Params
    pc_scale: float = Field(gt=0.0)
    weight: float = Field(ge=0.0)
    top_k: int = Field(ge=1)
    defect_images: Count = None  # labelled defect images the classifier was trained on
    golden_images: Count = None
    training: Optional[TrainingSummary] = None


@dataclass(frozen=True)
class State:
    params: Params
    patchcore: patchcore.State
    classifier: dict  # ARRAYS -> float32 arrays

    @classmethod
    def from_bundle(cls, params: Params, arrays: Mapping[str, np.ndarray]) -> "State":
        pc = patchcore.State.from_bundle(params.patchcore, arrays)
        d = pc.memory_bank.shape[1]
        c = {name: array(arrays, name, NAME, kind="f", ndim=2 if name == "supervised_w1" else 1) for name in ARRAYS}
        hidden = c["supervised_w1"].shape[1]
        for name, shape in (("supervised_mean", (d,)), ("supervised_std", (d,)), ("supervised_w1", (d, hidden)),
                            ("supervised_b1", (hidden,)), ("supervised_w2", (hidden,)), ("supervised_b2", (1,))):
            expect_shape(c[name], name, NAME, shape)
        if (c["supervised_std"] <= 0).any():
            raise StateInvalid("supervised: 'supervised_std' has entries <= 0")
        return cls(params, pc, c)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.patchcore.arrays(), **self.classifier}


def for_engine(state: State, precision: str) -> State:
    """PatchCore's search at the engine's precision (its for_engine)."""
    pc = patchcore.for_engine(state.patchcore, precision)
    params = state.params.model_copy(update={"patchcore": pc.params})
    return dataclasses.replace(state, params=params, patchcore=pc)


def patch_logits(classifier: Mapping[str, np.ndarray], feats: np.ndarray) -> np.ndarray:
    """feats float32 [N, D, h, w] -> the classifier's patch logits float32 [N, h, w]."""
    n, d, h, w = feats.shape
    x = feats.transpose(0, 2, 3, 1).reshape(-1, d)
    x = (x - classifier["supervised_mean"]) / classifier["supervised_std"]
    hid = np.maximum(x @ classifier["supervised_w1"] + classifier["supervised_b1"], 0.0)
    return (hid @ classifier["supervised_w2"] + classifier["supervised_b2"]).astype(np.float32).reshape(n, h, w)


def image_logits(logits: np.ndarray, top_k: int) -> np.ndarray:
    """[N, h, w] patch logits -> [N]: the mean of each image's top_k largest."""
    flat = logits.reshape(len(logits), -1)
    k = min(top_k, flat.shape[1])
    return np.sort(flat, axis=1)[:, -k:].mean(axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)  # tanh form: no overflow


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    p = state.params
    feats = features[p.patchcore.feature_name]
    dist, _, _ = patchcore.patch_scores(state.patchcore, feats)
    logits = patch_logits(state.classifier, feats)
    pc = dist / np.float32(p.pc_scale)
    maps = pc + np.float32(p.weight) * _sigmoid(logits)
    images = pc.reshape(len(pc), -1).max(1) + np.float32(p.weight) * _sigmoid(image_logits(logits, p.top_k))
    return score_patch_maps(maps, input_hw, p.smoothing_sigma, images.astype(np.float32))
