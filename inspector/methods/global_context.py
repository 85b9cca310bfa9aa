"""Global context: PatchCore's local patch map fused with a global branch that scores the whole
part, so "arrangement" defects (a missing label, bands of different grinding over a whole tile),
whose every patch looks like some golden patch, are caught too.

Local branch: PatchCore (inspector/methods/patchcore.py) as it is, in golden-standardised units:
``(patch distance - local_mean) / local_std``, the two fitted from golden images scored against
the bank without their own entries (calibration/methods/global_context.py).

Global branch: the patch features pooled (average and max) over coarse regions -- the whole
frame, and the cells of each grid in ``grids`` (2: 2x2, 4: 4x4) -- and a Gaussian per region
(Ledoit-Wolf shrinkage covariance). A region's Mahalanobis distance is standardised by the
out-of-fold distances of the golden images (z). Global score = the largest region z.

Image score = local z (its largest patch) + ``weight`` x global z (+ ``aligned_map.image_weight`` x
the aligned map's largest z, when both are on). Map: PatchCore's patch
distances plus ``map_weight`` x ``local_std`` x the z of the ``map_grids`` regions holding each cell
that the region's local evidence does not explain (``region_map``), so a region that is wrong as
a whole lights up as a whole while a scratch stays a scratch; with ``map_weight`` 0 (the default)
the map is PatchCore's own.

With ``aligned_map`` on (for parts at the same place in every frame) PatchCore's distances in
the map give way to (``fusion: replace``) or are joined by (``max``) the aligned-neighbour map
(inspector/methods/aligned.py), in the same golden z-units scaled back into PatchCore's distances,
and ``image_weight`` x its largest z joins the image score (``trim``: the map's references are
picked without the layout regions that differ most; ``coarse_dims``: the map is also made on the
first principal directions alone, and the two averaged; ``key_region``: the map's references are
picked by a variant key instead). The map's own searches run only when a
frame's map is asked for (ScoreMap.deferred_maps).
``enabled: auto`` (the default) leaves the choice to calibration (calibration/methods/pose.py: on
when the golden images look like a fixed pose), which records its decision in ``aligned_auto``.

Arrays: PatchCore's under the prefix ``gc_`` (``gc_memory_bank``, ``gc_bank_knn_index``);
``gc_region_mean`` float32 [R, F], ``gc_region_precision`` float32 [R, F, F] (inverse shrunk
covariance), ``gc_region_z`` float32 [R, 2] (golden out-of-fold distance mean, std), with F = 2 x
the feature dim (average, max) and R = the regions of ``grids`` in order, each row-major; with
``aligned_map`` ``gc_aligned_golden`` float16 [M, K, h, w], the golden images it compares with,
projected with ``dims`` on K principal directions (``gc_aligned_mean`` [D], ``gc_aligned_basis``
[D, K]; K = D and neither array without ``dims``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field, model_validator
from typing_extensions import Annotated

from inspector.methods import aligned, patchcore
from inspector.methods.aligned_settings import (
    AlignedConfig, AlignedParams, PoseDecision, Positive, Weight)
from inspector.methods.base import (Count, MethodConfig, MethodParams, ScoreMap, Sigma, StateInvalid, array,
                                    expect_shape, score_patch_maps)

NAME = "global_context"
HEAD = None
PREFIX = "gc_"  # PatchCore's arrays in this method's bundle
Grid = Annotated[int, Field(ge=1, le=16)]


class GlobalConfig(MethodConfig):
    # region grids: 1 = the whole frame, 2 = 2x2 cells, 4 = 4x4 cells (docs/BENCHMARKS.md, issue 13)
    grids: list[Grid] = Field([1, 2, 4], min_length=1, max_length=4)
    # the grids whose regions' z go into the map (a subset of grids): coarse regions add their z
    # to every cell of a large region, which outranks a small defect's cells in another image
    map_grids: list[Grid] = Field([4], max_length=4)
    weight: float = Field(1.0, ge=0.0, le=100.0)  # image score = local z + weight x global z
    # map cell += map_weight x its regions' unexplained z; 0 (default) keeps PatchCore's map, whose
    # pixel AUROC the region term lowered on bottle (docs/BENCHMARKS.md, issue 13)
    map_weight: float = Field(0.0, ge=0.0, le=100.0)
    folds: int = Field(5, ge=2, le=20)  # out-of-fold golden distances standardise the regions' z
    # golden images scored without their own bank entries to standardise the local branch
    local_images: int = Field(100, ge=2)
    aligned_map: AlignedConfig = AlignedConfig()
    # the pixel map refined by the frame (inspector/guided.py) over windows of this many feature
    # cells each side (0: off): 3, the 3x3-aggregated features' spread, keeps the map inside the
    # object edges it leaks past (docs/BENCHMARKS.md, issue 12/13 sharper pixel maps)
    map_guide_cells: int = Field(3, ge=0, le=16)
    map_guide_eps: float = Field(1e-3, gt=0.0, le=1.0)  # edges weaker than this grey variance are smoothed over

    @model_validator(mode="after")
    def _map_grids_are_grids(self) -> "GlobalConfig":
        if not set(self.map_grids) <= set(self.grids):
            raise ValueError(f"map_grids {self.map_grids} must be among grids {self.grids}")
        return self


class Config(patchcore.Config):
    """PatchCore's patch map fused with a Gaussian model of region-pooled features: PatchCore's
    settings (inherited, so the local branch has every option PatchCore has) plus its own section."""

    ignored_sections = ("padim",)
    method: Literal["global_context"] = "global_context"
    global_context: GlobalConfig = GlobalConfig()

    def local(self) -> patchcore.Config:
        """The PatchCore config of the local branch."""
        return patchcore.Config.model_validate(self.model_dump(exclude={"method", "global_context"}))


class Params(MethodParams):
    method: Literal["global_context"] = "global_context"
    local: patchcore.Params
    smoothing_sigma: Sigma = 4.0
    feature_name: str = "features"
    grid_hw: list[Annotated[int, Field(ge=1)]] = Field(min_length=2, max_length=2)  # the patch grid h, w
    grids: list[Grid] = Field(min_length=1, max_length=4)
    map_grids: list[Grid] = Field(max_length=4)
    weight: Weight
    map_weight: Weight
    local_mean: float
    local_std: Positive
    images_seen: Count = None
    aligned: Optional[AlignedParams] = None  # None: no aligned-neighbour map (and bundles from before it)
    aligned_auto: Optional[PoseDecision] = None  # enabled: auto's decision; None: not asked for
    map_guide_cells: Annotated[int, Field(ge=0, le=16)] = 0  # bundles from before it: no refinement
    map_guide_eps: Positive = 1e-3


def regions(grid_hw, grids) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every region, grid by grid, each row-major (the arrays' R order)."""
    h, w = grid_hw
    out = []
    for g in grids:
        ys = np.linspace(0, h, g + 1).round().astype(int)
        xs = np.linspace(0, w, g + 1).round().astype(int)
        out += [(int(ys[i]), int(max(ys[i + 1], ys[i] + 1)), int(xs[j]), int(max(xs[j + 1], xs[j] + 1)))
                for i in range(g) for j in range(g)]
    return out


def pooled(feats: np.ndarray, boxes) -> np.ndarray:
    """feats [N, D, h, w] -> float64 [N, R, 2D]: each region's average then max feature."""
    out = np.empty((len(feats), len(boxes), 2 * feats.shape[1]), np.float64)
    for r, (y0, y1, x0, x1) in enumerate(boxes):
        cell = feats[:, :, y0:y1, x0:x1].reshape(len(feats), feats.shape[1], -1)
        out[:, r, :feats.shape[1]] = cell.mean(axis=2, dtype=np.float64)
        out[:, r, feats.shape[1]:] = cell.max(axis=2)
    return out


def mahalanobis(x: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """x [N, R, F], mean [R, F], precision [R, F, F] -> distances float64 [N, R]."""
    diff = (x - mean[None]).transpose(1, 0, 2)  # [R, N, F]
    d2 = np.einsum("rnf,rnf->rn", np.matmul(diff, np.asarray(precision, np.float64)), diff)
    return np.sqrt(np.maximum(d2, 0.0)).T


@dataclass(frozen=True)
class State:
    params: Params
    local: patchcore.State
    region_mean: np.ndarray  # float32 [R, F]
    region_precision: np.ndarray  # float32 [R, F, F]
    region_z: np.ndarray  # float32 [R, 2]: golden distance mean, std
    aligned_golden: Optional[np.ndarray] = None  # float16 [M, K, h, w], with params.aligned only
    aligned_mean: Optional[np.ndarray] = None  # float32 [D], with params.aligned.dims only
    aligned_basis: Optional[np.ndarray] = None  # float32 [D, K], with params.aligned.dims only
    # aligned_golden with its layouts and their norms, made once (params.aligned only); and its first
    # params.aligned.coarse_dims directions alike (with those only)
    aligned_refs: Optional[aligned.References] = field(default=None, init=False, repr=False, compare=False)
    aligned_coarse: Optional[aligned.References] = field(default=None, init=False, repr=False, compare=False)
    # the golden images' patches inside params.aligned.key_cells, channels last [M, bh, bw, K] (with those only)
    aligned_key: Optional[np.ndarray] = field(default=None, init=False, repr=False, compare=False)
    precision64: np.ndarray = field(init=False, repr=False, compare=False)  # converted once, not per frame
    boxes: list = field(init=False, repr=False, compare=False)  # regions(grid_hw, grids), made once

    def __post_init__(self):
        object.__setattr__(self, "boxes", regions(self.params.grid_hw, self.params.grids))
        r = len(self.boxes)
        expect_shape(self.region_mean, "gc_region_mean", NAME, (r, None))
        f = self.region_mean.shape[1]
        expect_shape(self.region_precision, "gc_region_precision", NAME, (r, f, f))
        expect_shape(self.region_z, "gc_region_z", NAME, (r, 2))
        if f != 2 * self.local.memory_bank.shape[1]:
            raise StateInvalid(f"global_context: 'gc_region_mean' has {f} features, expected 2 x the memory "
                               f"bank's {self.local.memory_bank.shape[1]}")
        if not (self.region_z[:, 1] > 0).all():
            raise StateInvalid("global_context: 'gc_region_z' has a standard deviation that is not positive")
        object.__setattr__(self, "precision64", self.region_precision.astype(np.float64))
        if self.params.aligned is not None:
            if self.aligned_golden is None:
                raise StateInvalid("global_context: aligned_map is on but arrays.npz has no 'gc_aligned_golden'")
            d, dims = self.local.memory_bank.shape[1], self.params.aligned.dims
            if dims is not None:
                if self.aligned_mean is None or self.aligned_basis is None:
                    raise StateInvalid("global_context: aligned_map has dims but arrays.npz has no "
                                       "'gc_aligned_mean' / 'gc_aligned_basis'")
                expect_shape(self.aligned_mean, "gc_aligned_mean", NAME, (d,))
                expect_shape(self.aligned_basis, "gc_aligned_basis", NAME, (d, dims))
            expect_shape(self.aligned_golden, "gc_aligned_golden", NAME, (None, dims or d, *self.params.grid_hw))
            boxes = regions(self.params.grid_hw, [4])  # the 4x4 layout that picks a frame's neighbours
            object.__setattr__(self, "aligned_refs", aligned.References.of(self.aligned_golden, boxes))
            c = self.params.aligned.coarse_dims
            if c:
                if dims is None or c >= dims:
                    raise StateInvalid(f"global_context: aligned coarse_dims {c} must be below its dims {dims}")
                object.__setattr__(self, "aligned_coarse", aligned.References.of(self.aligned_golden[:, :c], boxes))
            key = self.params.aligned.key_cells
            if key is not None:
                y0, y1, x0, x1 = key
                if not (y0 < y1 <= self.params.grid_hw[0] and x0 < x1 <= self.params.grid_hw[1]):
                    raise StateInvalid(f"global_context: aligned key_cells {list(key)} are not inside the "
                                       f"{self.params.grid_hw[0]}x{self.params.grid_hw[1]} patch grid")
                object.__setattr__(self, "aligned_key", np.ascontiguousarray(
                    self.aligned_golden[:, :, y0:y1, x0:x1].transpose(0, 2, 3, 1), dtype=np.float32))

    @property
    def aligned_boxes(self) -> list:
        """The 4x4 regions whose average features pick a frame's aligned neighbours ([] without the map)."""
        return self.aligned_refs.boxes if self.aligned_refs is not None else []

    @classmethod
    def from_bundle(cls, params: Params, arrays: Mapping[str, np.ndarray]) -> "State":
        local = patchcore.State.from_bundle(
            params.local, {k[len(PREFIX):]: v for k, v in arrays.items() if k.startswith(PREFIX)})
        a = params.aligned
        golden = array(arrays, "gc_aligned_golden", NAME, kind="f", ndim=4, dtype=np.float16) if a else None
        projected = a is not None and a.dims is not None
        mean = array(arrays, "gc_aligned_mean", NAME, kind="f", ndim=1) if projected else None
        basis = array(arrays, "gc_aligned_basis", NAME, kind="f", ndim=2) if projected else None
        return cls(params, local, array(arrays, "gc_region_mean", NAME, kind="f", ndim=2),
                   array(arrays, "gc_region_precision", NAME, kind="f", ndim=3),
                   array(arrays, "gc_region_z", NAME, kind="f", ndim=2), golden, mean, basis)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {PREFIX + k: v for k, v in self.local.arrays().items()}
        out.update(gc_region_mean=self.region_mean, gc_region_precision=self.region_precision,
                   gc_region_z=self.region_z)
        if self.aligned_golden is not None:
            out["gc_aligned_golden"] = self.aligned_golden
        if self.aligned_basis is not None:
            out.update(gc_aligned_mean=self.aligned_mean, gc_aligned_basis=self.aligned_basis)
        return out


def aligned_map(state: State, feats: np.ndarray, projected: bool = False, for_map: bool = False,
                fine: Optional[np.ndarray] = None) -> np.ndarray:
    """feats [N, D, h, w] -> the aligned-neighbour distance maps in golden z-units, float32 [N, h, w]
    (``projected``: feats are already on the bundle's principal directions): the image term's, or
    with ``for_map`` the pixel map's: references picked by the layout without its ``trim`` most
    different regions, and the mean with the coarse map (``coarse_dims``), each in its own z-units.
    ``fine``: the image term's map of these frames, reused where the map's fine half is the same (trim 0).
    With ``key_cells`` the map's references are the golden images whose key region is nearest patch by
    patch (aligned.key_neighbours), in the same z-units (the pixel threshold is set on these maps)."""
    a = state.params.aligned
    if not projected:
        feats = aligned.project(feats, state.aligned_mean, state.aligned_basis)
    nbrs = None
    if for_map and state.aligned_key is not None:
        nbrs = aligned.key_neighbours(feats, state.aligned_key, a.key_cells, a.k, a.radius)
    trim = a.trim if for_map and nbrs is None else 0
    if fine is not None and not trim and nbrs is None:
        z = fine
    else:
        z = (state.aligned_refs.maps(feats, a.k, a.radius, trim, nbrs=nbrs) - np.float32(a.mean)) / np.float32(a.std)
    if for_map and a.coarse_dims:
        coarse = state.aligned_coarse.maps(np.ascontiguousarray(feats[:, :a.coarse_dims]), a.k, a.radius, trim,
                                           nbrs=nbrs)
        w = np.float32(a.coarse_weight)
        z = (1 - w) * z + w * (coarse - np.float32(a.coarse_mean)) / np.float32(a.coarse_std)
    return z


def for_engine(state: State, precision: str) -> State:
    """The local branch searched as the calibrating engine's precision asks (as PatchCore's)."""
    local = patchcore.for_engine(state.local, precision)
    return dataclasses.replace(state, params=state.params.model_copy(update={"local": local.params}), local=local)


def region_z(state: State, feats: np.ndarray) -> np.ndarray:
    """feats float32 [N, D, h, w] -> each region's golden-standardised Mahalanobis z, float32 [N, R]."""
    h, w = feats.shape[2:]
    gh, gw = state.params.grid_hw
    if (h, w) != (gh, gw):
        raise ValueError(f"global_context bundle has a {gh}x{gw} patch grid, the features are {h}x{w}: the "
                         f"network input size differs from calibration; recalibrate")
    d = mahalanobis(pooled(feats, state.boxes), state.region_mean, state.precision64)
    return ((d - state.region_z[:, 0]) / state.region_z[:, 1]).astype(np.float32)


def region_map(z: np.ndarray, local_z: np.ndarray, grids, map_grids) -> np.ndarray:
    """z [N, R] (the regions of ``grids``), local_z [N, h, w] -> [N, h, w]: at each cell the
    largest z of the ``map_grids`` regions holding it that their local evidence does not explain,
    ``max(0, z - max(0, the region's largest local z))``: a region wrong as a whole with no
    anomalous patch gets its z; a region whose z comes from one anomalous patch (a scratch) gets
    little, so the patch stays sharp instead of lighting its whole region."""
    out = np.zeros(local_z.shape, np.float32)
    r = 0
    for g in grids:
        boxes = regions(local_z.shape[1:], [g])
        if g in map_grids:
            for k, (y0, y1, x0, x1) in enumerate(boxes):
                cell = local_z[:, y0:y1, x0:x1]
                unexplained = z[:, r + k] - np.maximum(cell.reshape(len(cell), -1).max(axis=1), 0.0)
                np.maximum(out[:, y0:y1, x0:x1], unexplained[:, None, None], out=out[:, y0:y1, x0:x1])
        r += len(boxes)
    return out


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    p, a = state.params, state.params.aligned
    feats = features[p.feature_name]
    local = patchcore.score(state.local, {state.local.params.feature_name: feats}, input_hw)
    image_local = (local.image_scores - np.float32(p.local_mean)) / np.float32(p.local_std)
    z = region_z(state, feats)
    image = image_local + np.float32(p.weight) * z.max(axis=1)
    # the map's own references or directions (trim, the coarse map) are searches that only a drawn
    # map needs (the daemon's fails): made per frame when asked for
    own_map = a is not None and bool(a.trim or a.coarse_dims or a.key_cells)
    projected = aligned_z = None
    if a is not None and (a.image_weight > 0 or not own_map):
        projected = aligned.project(feats, state.aligned_mean, state.aligned_basis)
        aligned_z = aligned_map(state, projected, projected=True)
        if a.image_weight > 0:
            image = image + np.float32(a.image_weight) * aligned_z.reshape(len(aligned_z), -1).max(axis=1)

    def patch_maps(rows) -> np.ndarray:
        # the map stays in PatchCore's distance units (the heatmap and regions threshold it like
        # PatchCore's, at a positive pixel threshold); the regions' z enters scaled back into them
        maps = local.patch_maps[rows]
        if a is not None:  # in golden z-units, scaled back into PatchCore's distances
            fine = None if aligned_z is None else aligned_z[rows]
            if own_map:
                frames = feats[rows] if projected is None else projected[rows]
                map_z = aligned_map(state, frames, projected=projected is not None, for_map=True, fine=fine)
            else:
                map_z = fine
            near = np.float32(p.local_mean) + np.float32(p.local_std) * map_z
            maps = near if a.fusion == "replace" else np.maximum(maps, near)
        if p.map_weight > 0:
            local_z = (local.patch_maps[rows] - np.float32(p.local_mean)) / np.float32(p.local_std)
            maps = maps + np.float32(p.map_weight * p.local_std) * region_map(z[rows], local_z, p.grids, p.map_grids)
        return maps

    return score_patch_maps(patch_maps if own_map else patch_maps(slice(None)), input_hw, p.smoothing_sigma,
                            image.astype(np.float32), p.map_guide_cells, p.map_guide_eps, grid_hw=feats.shape[2:])
