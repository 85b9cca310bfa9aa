"""Is the part at the same pose in every frame? The calibrate-time rule behind global context's
``aligned_map: {enabled: auto}`` (docs/BENCHMARKS.md, "the fixed-pose rule").

A part in a fixture differs between golden frames only by part-to-part and lighting noise,
spread over many directions, so an image's nearest golden neighbour by layout (the features
averaged over a 4x4 grid, as the aligned map picks its neighbours) is not much closer than a
typical other golden image. A part that turns or moves differs mostly by its pose: images at
nearby poses are close, a typical pair is far apart. The **twin ratio** -- the median over golden
images of (layout distance to the nearest other image) / (the median layout distance between
two images) -- is therefore high for fixed-pose parts and textures and low for parts that turn
or move. It falls as the set grows, so it is taken on ``SUBSET`` original images at a time
(seeded random subsets, averaged), which lets one cut hold for any line.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from inspector.methods import aligned
from inspector.methods import global_context as gc

SUBSET = 60  # golden images per subset the cut was set at (docs/BENCHMARKS.md)
REPEATS = 5  # subsets averaged (their spread on the benchmark sets: docs/BENCHMARKS.md)


def twin_ratio(layouts: np.ndarray) -> float:
    """layouts [n, F] (n >= 3) -> median nearest-other distance / median pair distance."""
    x = layouts.astype(np.float64)
    sq = (x * x).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2.0 * x @ x.T, 0.0))
    np.fill_diagonal(d, np.inf)
    pairs = d[np.triu_indices(len(d), 1)]
    return float(np.median(d.min(axis=1)) / max(float(np.median(pairs)), 1e-12))


def decide(features: np.ndarray, cut: float, seed: int, member: Optional[np.ndarray] = None) -> gc.PoseDecision:
    """features [N, D, h, w] golden features -> whether the aligned map goes on, and why. member:
    int [N], each row's original image (augmented copies are near twins of it: one row per original
    is used); None: each row its own."""
    member = np.arange(len(features)) if member is None else np.asarray(member)
    _, first = np.unique(member, return_index=True)
    n = len(first)
    if n < SUBSET:
        return gc.PoseDecision(enabled=False, twin_ratio=None, cut=cut, images=n,
                               reason=f"only {n} golden images: the rule needs {SUBSET} to judge the pose; "
                                      f"set aligned_map.enabled true for a part in a fixture")
    lay = aligned.layouts(features, gc.regions(features.shape[2:], [4]))[first]  # no copy of the features
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(REPEATS if n > SUBSET else 1):  # with exactly SUBSET images every subset is the same
        ratios.append(twin_ratio(lay[np.sort(rng.choice(n, SUBSET, replace=False))]))
    r = round(float(np.mean(ratios)), 4)  # as recorded and printed: the summary never reads "0.4800 < 0.48" for on
    on = r >= cut
    why = ("fixed pose: a golden image's nearest twin is about as far as a typical golden image" if on else
           "the part moves or turns between frames: golden images have much nearer twins (similar poses) "
           "than typical pairs")
    return gc.PoseDecision(enabled=on, twin_ratio=r, cut=cut, images=n, reason=why)


def resolve(config: gc.AlignedConfig, features: np.ndarray, seed: int,
            member: Optional[np.ndarray] = None, known: Optional[gc.PoseDecision] = None) -> gc.AlignedConfig:
    """``enabled: auto`` turned into true or false by ``decide``, the decision kept with it; any
    other config unchanged. ``known``: ``decide``'s answer on these features, when the caller has
    it already (calibrate, for preprocess.align auto); used when its cut is this config's."""
    if config.enabled != "auto":
        return config
    d = known if known is not None and known.cut == config.auto_cut else decide(features, config.auto_cut, seed, member)
    return config.model_copy(update={"enabled": d.enabled, "decision": d})
