"""Offline fitting, one module per method: ``calibration/methods/<name>.py`` holds only
``fit(features, config, seed, progress) -> State`` for the method ``inspector/methods/<name>.py``
(a method with ``USES_DEFECTS`` also takes ``defects=``, the labelled defect images' features; a
fit with a ``groups`` parameter gets each row's original golden image, so augmented copies go
with their original wherever it holds images out; optionally ``resolve_config(features, config,
seed, groups, known_pose) -> config``: choices the config leaves to the golden images, made once before
calibration's fits)
(the contract: inspector/methods/base.py). Shared pieces: coreset.py (PatchCore's k-center
selection), training.py (the loop the trained heads share)."""
from __future__ import annotations

import importlib
import inspect
from typing import Callable, Optional, Protocol

import numpy as np


class Progress(Protocol):
    """What a fit reports: ``total(n)`` once it knows how many steps it takes, ``update(n)``
    after each n steps."""

    def total(self, n: int) -> None: ...

    def update(self, n: int = 1) -> None: ...


class NoProgress:
    def total(self, n: int) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass


class CallbackProgress:
    """A Progress from two callbacks (a tqdm bar's update and a total setter)."""

    def __init__(self, update: Callable[[int], None], total: Optional[Callable[[int], None]] = None):
        self._update, self._total = update, total

    def total(self, n: int) -> None:
        if self._total:
            self._total(n)

    def update(self, n: int = 1) -> None:
        self._update(n)


def fitter(method: str) -> Callable:
    """``calibration.methods.<method>.fit`` (imported on first use: the trained heads pull in torch)."""
    return importlib.import_module(f"{__name__}.{method}").fit


def resolve_config(config, features: np.ndarray, seed: int = 0, groups: Optional[np.ndarray] = None,
                   known_pose=None, content_hw: Optional[tuple[float, float]] = None):
    """``config`` with what it leaves to the golden images decided (global context's
    ``aligned_map: {enabled: auto}``) by the method's ``resolve_config``, once on all golden features
    float32 [N, D, h, w], so that every fit of one calibration scores the same way; unchanged for a
    method without one. known_pose: the fixed-pose rule's answer on these features
    (calibration/methods/pose.py decide), when calibrate has it already. content_hw: the inspected
    area's extent in feature cells (the grid's padding beyond it), for a resolve that names it."""
    resolve = getattr(importlib.import_module(f"{__name__}.{config.method}"), "resolve_config", None)
    if resolve is None:
        return config
    extra = {"content_hw": content_hw} if "content_hw" in inspect.signature(resolve).parameters else {}
    return resolve(features, config, seed, groups, known_pose, **extra)


def fit_method(config, features: np.ndarray, seed: int = 0, progress: Optional[Progress] = None,
               defects: Optional[np.ndarray] = None, groups: Optional[np.ndarray] = None):
    """The configured method fitted on golden features float32 [N, D, h, w] -> its State.
    defects: float32 [M, D, h, w] features of labelled defect images, for a method whose runtime
    module declares ``USES_DEFECTS`` (passed only then). groups: int [N], the original golden
    image of each row (calibrate --augment's copies share it; calibration/augment.py origin_ids),
    passed to a fit that takes ``groups`` (one that holds images out inside the fit, as global
    context's out-of-fold Gaussians do); None: every row its own image."""
    fit = fitter(config.method)
    extra = {}
    if defects is not None:
        extra["defects"] = defects
    if groups is not None and "groups" in inspect.signature(fit).parameters:
        extra["groups"] = groups
    return fit(features, config, seed, progress or NoProgress(), **extra)
