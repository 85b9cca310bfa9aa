"""PatchCore (Roth et al. 2022): each patch's distance to its nearest golden patch in a coreset
memory bank; image score = the largest patch distance (optionally reweighted, paper eq. 7).

Arrays: ``memory_bank`` float32 [M, D] (the coreset), and with ``reweight``
``bank_knn_index`` int32 [M, b] (each bank entry's b nearest other entries). The search over the
bank is a searcher object (inspector/methods/knn.py) named by the ``search`` param.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.methods.base import (Count, MethodConfig, MethodParams, ScoreMap, Sigma, StateInvalid, array,
                                    expect_shape, score_patch_maps)
from inspector.methods import search_memo
from inspector.methods.knn import NearestSearch, SearchName, build_searcher, search_for_engine

NAME = "patchcore"
HEAD = None


class CoresetConfig(MethodConfig):
    # Size of the memory bank: an absolute count (wins when set) or a ratio of all patches.
    size: Optional[int] = Field(None, ge=1)
    ratio: float = Field(0.01, gt=0.0, le=1.0)
    # Cap on the ratio-derived size: the per-frame search grows with the bank. At 2000 x 152 dims
    # it costs less than the backbone (docs/BENCHMARKS.md); 4000 bought no AUROC on magnetic_tile.
    max_size: Optional[int] = Field(2000, ge=1)
    projection_dim: int = Field(64, ge=8)  # random projection used to select the coreset
    # the coreset is picked among at most this many golden patches (a seeded random sample; None:
    # all). Each greedy pick reads every candidate: tiled frames and large golden sets (600k+
    # patches) made the fit memory-bound for minutes (docs/BENCHMARKS.md, issue 12)
    max_candidates: Optional[int] = Field(250_000, ge=1000)


class Config(MethodConfig):
    """Nearest golden patch (coreset memory bank)."""

    ignored_sections = ("padim", "global_context")
    type: Literal["memory_bank"] = "memory_bank"
    method: Literal["patchcore"] = "patchcore"
    coreset: CoresetConfig = CoresetConfig()
    # PatchCore paper's image-score reweighting by the density around the nearest neighbour.
    reweight: bool = False
    reweight_neighbours: int = Field(3, ge=1)
    smoothing_sigma: float = Field(4.0, ge=0.0)  # Gaussian blur of the anomaly map, input pixels


class Params(MethodParams):
    method: Literal["patchcore"] = "patchcore"
    smoothing_sigma: Sigma = 4.0
    feature_name: str = "features"
    reweight: bool = False
    search: SearchName = "fp32"  # bundles from before it was recorded searched exactly
    bank_size: Count = None
    patches_seen: Count = None
    coreset_candidates: Count = None


@dataclass(frozen=True)
class State:
    params: Params
    memory_bank: np.ndarray  # float32 [M, D]
    bank_knn_index: Optional[np.ndarray] = None  # int32 [M, b], with params.reweight only
    searcher: NearestSearch = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        m = len(self.memory_bank)
        if self.params.reweight:
            if self.bank_knn_index is None:
                raise StateInvalid("patchcore: reweight is on but arrays.npz has no 'bank_knn_index'")
            expect_shape(self.bank_knn_index, "bank_knn_index", NAME, (m, None))
            if self.bank_knn_index.min() < 0 or self.bank_knn_index.max() >= m:
                raise StateInvalid(f"patchcore: 'bank_knn_index' points outside the {m}-row memory bank")
        object.__setattr__(self, "searcher", build_searcher(self.params.search, self.memory_bank))

    @classmethod
    def from_bundle(cls, params: Params, arrays: Mapping[str, np.ndarray]) -> "State":
        bank = array(arrays, "memory_bank", NAME, kind="f", ndim=2)
        knn = array(arrays, "bank_knn_index", NAME, kind="i", ndim=2, dtype=np.int32) if params.reweight else None
        return cls(params, bank, knn)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"memory_bank": self.memory_bank}
        if self.bank_knn_index is not None:
            out["bank_knn_index"] = self.bank_knn_index
        return out

    def with_search(self, search: SearchName) -> "State":
        """The same bank searched another way (a new searcher is built)."""
        return dataclasses.replace(self, params=self.params.model_copy(update={"search": search}))


def for_engine(state: State, precision: str) -> State:
    """Search in bf16 when the calibrating engine runs bf16 (recorded in the bundle)."""
    return state.with_search(search_for_engine(precision))


def patch_scores(state: State, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """feats float32 [N, D, h, w] -> (patch distance maps [N, h, w], nn index [N, h*w], queries [N, h*w, D])."""
    n, d, h, w = feats.shape
    q = np.ascontiguousarray(feats.transpose(0, 2, 3, 1).reshape(-1, d), dtype=np.float32)
    dist, idx = search_memo.search(state.searcher, q)  # calibration may answer repeated rows from memory
    return dist.reshape(n, h, w), idx.reshape(n, h * w), q.reshape(n, h * w, d)


def _reweighted(state: State, maps: np.ndarray, idx: np.ndarray, q: np.ndarray) -> np.ndarray:
    """PatchCore eq. 7: scale the max patch score by how isolated its nearest bank entry is."""
    bank = state.memory_bank
    scores = np.empty(len(maps), np.float32)
    for i in range(len(maps)):
        flat = maps[i].ravel()
        p = int(flat.argmax())
        nn = int(idx[i, p])
        neigh = bank[np.concatenate([[nn], state.bank_knn_index[nn]])]
        dists = np.sqrt(np.maximum(((neigh - q[i, p]) ** 2).sum(1), 0.0))
        # softmax-style weight, stabilised by subtracting the max exponent
        e = np.exp(dists - dists.max())
        weight = 1.0 - e[0] / e.sum()
        scores[i] = weight * flat[p]
    return scores


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    maps, idx, q = patch_scores(state, features[state.params.feature_name])
    image_scores = _reweighted(state, maps, idx, q) if state.params.reweight else None
    return score_patch_maps(maps, input_hw, state.params.smoothing_sigma, image_scores)
