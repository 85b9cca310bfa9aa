"""The method contract: what one anomaly-detection method (PatchCore, PaDiM, Deep SVDD, ...) is.

A method is one module pair, and nothing else in the code names it:

``inspector/methods/<name>.py`` (the runtime; numpy + pydantic, no torch, no calibration) holds

- ``NAME``: the method's name, e.g. ``"patchcore"`` (equal to ``Config``'s ``method`` literal);
- ``Config``: a ``MethodConfig`` (pydantic) with ``type: Literal["<family>"] = "<family>"`` and
  ``method: Literal["<name>"] = "<name>"``. ``type`` is the family the config file names
  (``memory_bank``, ``hypersphere``, ``reconstruction``, ``discriminative``, ``flow``); it is accepted
  and checked, and a file that omits ``type`` means ``memory_bank``. The family's first method in the registry is
  its default (a file saying only ``type: hypersphere`` gets Deep SVDD);
- ``Params``: a ``MethodParams`` (pydantic, strict): the JSON half of the fitted state, stored in
  the manifest as ``scorer.params`` and validated there (``method`` is its discriminator);
- ``State``: the fitted state, a frozen dataclass with ``params: Params`` plus its arrays, and
  ``State.from_bundle(params, arrays) -> State`` (refuses missing or ill-shaped arrays with
  ``StateInvalid``, one line) and ``state.arrays() -> dict[str, ndarray]`` (for arrays.npz;
  names plain ``[A-Za-z0-9_.]``, never a name another method or the bundle uses: prefix them);
- ``score(state, features, input_hw) -> ScoreMap``: ``features`` is the engine's outputs,
  ``{name: float32 [N, C, h, w]}`` (the backbone's ``features`` [N, D, h, w] at stride 8, or a
  declared head's output [N, 1, h, w]); ``input_hw`` the network input (H, W) the pixel maps are
  made at. Image scores float32 [N] (higher = more anomalous), patch maps float32 [N, h, w] or
  None for an image-level method. Batch scores must equal one-by-one scores;
- ``HEAD``: an ``EngineHead`` when the method runs a trained torch head inside the engine's ONNX
  graph (Deep SVDD, the autoencoder, the discriminator), else None. A head method's ``State`` also has
  ``network_head() -> (description, weights)``: the head's JSON description (``kind`` one of
  engines/backbones/heads.py's) and its weights ``{"head.<state_dict key>": float32 array}``;
  calibration exports backbone + head as one network whose output is ``HEAD.output_name``;
- optionally ``for_engine(state, precision) -> State``: the state as the calibrating engine's
  precision asks (PatchCore: the bf16 shortlist search on a bf16 engine). Absent: unchanged.
- optionally ``check_engine(state, engine) -> None``: raises ``BundleError`` (one line) when the
  method cannot run on that engine (AnoDDPM: GPU engines only); the daemon calls it when it
  builds its pipeline.
- optionally ``check_calibration_engine(config, engine) -> None``: the same rule before any fitting:
  raises ``InspectorError`` (one line naming the setting and what to do) when the bundle ``config``
  would make is one ``check_engine`` refuses on ``engine`` (the engine calibration opened from the
  config, the one the line runs). Calibration calls it as soon as that engine is open.
- optionally ``USES_DEFECTS = True``: the method trains on labelled defect images as well
  (``supervised``). Calibration then refuses to run without ``--defects DIR`` and passes the
  defect images' features (same engine and preprocessing as the golden ones) to the fit.

``calibration/methods/<name>.py`` (offline; may import torch, scikit-learn) holds only
``fit(features, config, seed, progress) -> State``: ``features`` float32 [N, D, h, w] golden patch
features, ``config`` the method's ``Config``, ``seed`` int, ``progress`` a
``calibration.methods.Progress`` (``total(n)``, ``update(n)``). A ``USES_DEFECTS`` method's fit is
``fit(features, config, seed, progress, defects=None)``, ``defects`` float32 [M, D, h, w] (the
same h, w); it refuses None in one line. A fit that holds golden images out inside itself (global
context's out-of-fold Gaussians) takes ``groups=None``: int [N], the original golden image of each
row, which ``calibrate --augment``'s copies share with their original; calibration passes it to a
fit whose signature names it, and such a fit holds a group out whole. A method may compose another's state and fit (supervised
holds a PatchCore state and calls PatchCore's fit) rather than copy them. Optionally it also holds
``resolve_config(features, config, seed, groups, known_pose[, content_hw]) -> config``: settings the config
leaves to the golden images (``known_pose``: the fixed-pose rule's answer when calibrate has it; ``content_hw``,
passed to a resolve that names it: the inspected area's extent in feature cells, without the grid's padding) (global
context's ``aligned_map: {enabled: auto}`` and its ``key_region``'s cells), decided once on all of them
before calibration's fits (the held-out split's and the refit on all), so both score alike.

The one list of methods is ``inspector/methods/registry.py`` ``METHODS``; the config union, the
manifest's params union, calibration and bundle loading are all built from it. Adding a method:
these two files, one line in ``METHODS``, a row in the README's "Which scorer for what".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Annotated

Sigma = Annotated[float, Field(ge=0.0, le=1000.0, allow_inf_nan=False)]
Count = Optional[Annotated[int, Field(ge=0)]]
HEAD_PREFIX = "head."  # a head's weights in arrays.npz (as engines/backbones/heads.py reads them)


@dataclass
class ScoreMap:
    """A batch's scores. image_scores: float32 [N]. patch_maps: float32 [N, h, w], one score per
    feature-map cell, or None for image-level scorers.

    Pixel maps (upsampled to ``input_hw`` and smoothed) are made on request, for one frame or
    for the whole batch: the daemon needs them only for the frames it draws or cuts into regions (the fails),
    and at 20 frames/s making them for every pass cost 0.3-0.5 ms a frame for nothing."""

    image_scores: np.ndarray
    patch_maps: Optional[np.ndarray] = None
    input_hw: tuple[int, int] = (0, 0)
    sigma: float = 0.0
    # edge-aware refinement by the frame (inspector/guided.py): the guided filter's window radius
    # in feature cells (0: none) and its eps; applied where the caller hands the frame in
    guide_cells: int = 0
    guide_eps: float = 1e-3
    # instead of ``patch_maps``, for a method whose map costs more than its image scores (global
    # context's own references): rows (int [n]) -> those frames' patch maps float32 [n, h, w], made
    # when asked for, so a pass never pays for its map and a fail pays for its own only
    deferred_maps: Optional[Callable[[np.ndarray], np.ndarray]] = field(default=None, repr=False, compare=False)
    grid_hw: Optional[tuple[int, int]] = None  # the patch grid (h, w) of deferred maps

    def __post_init__(self) -> None:
        self.__dict__["_row_maps"] = {}
        if self.__dict__["_patch_maps"] is not None:
            self.deferred_maps = None  # maps given win (a batch joined from its parts' maps)
        elif self.deferred_maps is not None and self.grid_hw is None:
            raise ValueError("deferred patch maps need their grid_hw")

    @property
    def cell(self) -> int:
        """Input pixels per feature cell."""
        maps = self.__dict__["_patch_maps"]
        h = self.grid_hw[0] if self.grid_hw is not None else maps.shape[1] if maps is not None else 0
        return self.input_hw[0] // h if h else 1

    @property
    def guide_radius(self) -> int:
        """The guided filter's window radius in input pixels (0: no refinement)."""
        return self.guide_cells * self.cell

    def patch_map(self, k: int) -> Optional[np.ndarray]:
        """Frame ``k``'s patch map float32 [h, w] (deferred: made for that frame alone, once), or None."""
        maps = self.__dict__["_patch_maps"]
        if maps is not None or self.deferred_maps is None:
            return None if maps is None else maps[k]
        rows = self.__dict__["_row_maps"]
        if k not in rows:
            rows[k] = np.asarray(self.deferred_maps(np.array([k]))[0], np.float32)
        return rows[k]

    def pixel_map(self, k: int, guide: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
        """float32 [H, W] for frame ``k`` (made on each call); None for image-level scorers.
        ``guide``: the frame's work image (float32 CHW RGB in [0, 1], as the preprocessor makes
        it, or grey [H, W]); with ``guide_radius`` the map is refined along its edges."""
        m = self.patch_map(k)
        if m is None:
            return None
        out = upsample_and_smooth(m[None], self.input_hw, self.sigma)[0]
        return self.refined(out, guide)

    def refined(self, pixel_map: np.ndarray, guide: Optional[np.ndarray]) -> np.ndarray:
        """A pixel map of this batch refined by its frame's ``guide`` (unchanged without one or
        without ``guide_radius``)."""
        if guide is None or self.guide_radius <= 0:
            return pixel_map
        from inspector.guided import grey_guide, refine_map  # cv2 at call time, as below

        # the coefficients at half a feature cell (the fast guided filter): the map has no finer detail
        return refine_map(grey_guide(guide), pixel_map, self.guide_radius, self.guide_eps, max(1, self.cell // 2))

    @cached_property
    def pixel_maps(self) -> Optional[np.ndarray]:
        """float32 [N, H, W] for the whole batch (calibration, benchmarks), or None; made once."""
        if self.patch_maps is None:
            return None
        return upsample_and_smooth(self.patch_maps, self.input_hw, self.sigma)

    def guided_pixel_maps(self, guides) -> Optional[np.ndarray]:
        """``pixel_maps`` each refined by its frame (``guides``: one per frame, as ``pixel_map``
        takes it); the same as ``pixel_maps`` without ``guide_radius``."""
        maps = self.pixel_maps
        if maps is None or self.guide_radius <= 0:
            return maps
        if len(guides) != len(maps):
            raise ValueError(f"{len(guides)} guide images for {len(maps)} maps")
        return np.stack([self.refined(m, g) for m, g in zip(maps, guides)])


def _patch_maps(self: ScoreMap) -> Optional[np.ndarray]:
    maps = self.__dict__["_patch_maps"]
    if maps is None and self.deferred_maps is not None:
        maps = np.asarray(self.deferred_maps(np.arange(len(self.image_scores))), np.float32)
        self.__dict__["_patch_maps"], self.deferred_maps = maps, None  # made: the closure and its arrays go
        self.__dict__["_row_maps"].clear()
    return maps


def _set_patch_maps(self: ScoreMap, maps: Optional[np.ndarray]) -> None:
    self.__dict__["_patch_maps"] = maps


# after the dataclass is made: its __init__ assigns the field, which the setter stores
ScoreMap.patch_maps = property(_patch_maps, _set_patch_maps,
                               doc="float32 [N, h, w] (deferred: made for the whole batch on first use), or None")


def upsample_and_smooth(patch_maps: np.ndarray, input_hw: tuple[int, int], sigma: float) -> np.ndarray:
    """[N, h, w] patch scores -> [N, H, W] pixel maps: bilinear upsampling then a Gaussian blur
    (PatchCore's sigma=4), so a map can be thresholded into regions and drawn as a heatmap."""
    import cv2  # here, not at the top: manifests (read by storage) import the method modules

    H, W = input_hw
    out = np.empty((len(patch_maps), H, W), dtype=np.float32)
    for i, m in enumerate(patch_maps):
        up = cv2.resize(m.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.GaussianBlur(up, (0, 0), sigma) if sigma > 0 else up
    return out


def score_patch_maps(maps: np.ndarray | Callable[[np.ndarray], np.ndarray], input_hw: tuple[int, int], sigma: float,
                     image_scores: np.ndarray | None = None, guide_cells: int = 0,
                     guide_eps: float = 1e-3, grid_hw: Optional[tuple[int, int]] = None) -> ScoreMap:
    """[N, h, w] patch scores -> ScoreMap: image score = the largest patch score (unless the
    method has its own); pixel maps upsampled and smoothed when asked for (and refined by the
    frame over windows of ``guide_cells`` feature cells, where the caller hands it in). ``maps``
    may be a function of frame rows that makes theirs when asked for (ScoreMap.deferred_maps; then
    ``image_scores`` and the maps' ``grid_hw`` are required)."""
    deferred = maps if callable(maps) else None
    if image_scores is None:
        if deferred is not None:
            raise ValueError("deferred patch maps need the method's own image scores")
        image_scores = maps.reshape(len(maps), -1).max(axis=1)
    return ScoreMap(image_scores.astype(np.float32), None if deferred else np.asarray(maps, np.float32),
                    tuple(input_hw), float(sigma), int(guide_cells), float(guide_eps), deferred,
                    None if deferred is None or grid_hw is None else tuple(grid_hw))


# ---------------------------------------------------------------- config and params
class MethodConfig(BaseModel):
    """A method's config section (``scorer:`` in the YAML). Unknown keys are refused, except
    ``ignored_sections``: the sections of the family's other methods, which a file that switched
    ``method`` may still hold (they were accepted when one class served the whole family)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ignored_sections: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_other_methods_sections(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.ignored_sections:
            return {k: v for k, v in data.items() if k not in cls.ignored_sections}
        return data


class StrictJson(BaseModel):
    """A manifest part: strict types (no "4" for 4), every key modelled, numbers finite."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, allow_inf_nan=False)


class MethodParams(StrictJson):
    """The JSON half of a fitted state (manifest ``scorer.params``). Keys only some bundles
    have are Optional (None: not recorded)."""

    feature_dim: Count = None  # the backbone's patch feature dimension D at calibration


class TrainingSummary(StrictJson):
    """How a trained head's fit went (calibration/methods/training.py TrainReport)."""

    epochs_run: int
    best_epoch: int
    best_val_loss: float
    train_loss: float


# ---------------------------------------------------------------- state
class StateInvalid(ValueError):
    """A fitted state that does not parse (missing or ill-shaped array, bad params): one line."""


def array(arrays: Mapping[str, np.ndarray], name: str, method: str, *, kind: str, ndim: int,
          dtype: type = np.float32) -> np.ndarray:
    """``arrays[name]`` as a C-contiguous ``dtype`` array; StateInvalid when it is missing, is not
    of ``kind`` ("f" float, "i" integer) or has not ``ndim`` dimensions."""
    a = arrays.get(name)
    if a is None:
        raise StateInvalid(f"{method}: arrays.npz has no '{name}'")
    a = np.asarray(a)
    if a.dtype.kind not in (("i", "u") if kind == "i" else (kind,)) or a.ndim != ndim or a.size == 0:
        raise StateInvalid(f"{method}: '{name}' is {a.dtype} {list(a.shape)}, expected a non-empty "
                           f"{'integer' if kind == 'i' else 'float'} array of {ndim} dimensions")
    return np.ascontiguousarray(a, dtype=dtype)


def expect_shape(a: np.ndarray, name: str, method: str, shape: tuple) -> None:
    """StateInvalid unless ``a.shape`` is ``shape`` (None in ``shape``: any size there)."""
    if len(a.shape) != len(shape) or any(w is not None and s != w for s, w in zip(a.shape, shape)):
        want = "x".join("?" if w is None else str(w) for w in shape)
        raise StateInvalid(f"{method}: '{name}' has shape {list(a.shape)}, expected {want}")


class MethodState(Protocol):
    params: MethodParams

    @classmethod
    def from_bundle(cls, params: MethodParams, arrays: Mapping[str, np.ndarray]) -> "MethodState": ...

    def arrays(self) -> dict[str, np.ndarray]: ...


# ---------------------------------------------------------------- heads inside the engine
@dataclass(frozen=True)
class EngineHead:
    """A trained torch head the engine runs after the backbone, in the same ONNX graph:
    ``kind`` is engines/backbones/heads.py's, ``output_name`` the network's one output,
    float32 [N, 1, h, w]."""

    kind: str
    output_name: str = "patch_scores"


def head_weights(arrays: Mapping[str, np.ndarray], method: str, in_dim: int) -> dict[str, np.ndarray]:
    """The ``head.*`` arrays of a head method's state, float32; StateInvalid without them or when
    the head's input standardisation does not have ``in_dim`` channels."""
    weights = {k: np.asarray(v, np.float32) for k, v in arrays.items() if k.startswith(HEAD_PREFIX)}
    for name in (HEAD_PREFIX + "norm.mean", HEAD_PREFIX + "norm.std"):
        if name not in weights:
            raise StateInvalid(f"{method}: arrays.npz has no '{name}' (the head's weights are missing)")
        expect_shape(weights[name], name, method, (1, in_dim, 1, 1))
    return weights


Dim = Annotated[int, Field(ge=1)]


class HeadDescription(StrictJson):
    """A head's JSON description (engines/backbones/heads.py build_head reads it); subclasses add
    ``kind`` and the head's sizes."""

    in_dim: Dim  # the backbone feature dimension D the head reads
    arrays: str = "arrays.npz"  # where the torch engine finds the weights, beside the ONNX


class HeadParams(MethodParams):
    """Params every head method has; subclasses add ``method`` and a typed ``head``."""

    smoothing_sigma: Sigma = 4.0
    output_name: str = "patch_scores"
    training: Optional[TrainingSummary] = None


@dataclass(frozen=True)
class HeadState:
    """The state of a method whose model is a head inside the engine: params (with ``head``, the
    head's description with its ``in_dim``, and ``output_name``) and the head's weights."""

    params: Any
    head_weights: dict[str, np.ndarray]  # "head.<state_dict key>": float32

    @classmethod
    def from_bundle(cls, params: Any, arrays: Mapping[str, np.ndarray]) -> "HeadState":
        return cls(params, head_weights(arrays, params.method, params.head.in_dim))

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(self.head_weights)

    def network_head(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(the head's JSON description, its weights) for the network calibration exports."""
        return self.params.head.model_dump(mode="json"), dict(self.head_weights)


def score_head_output(features: Mapping[str, np.ndarray], output_name: str, input_hw: tuple[int, int],
                      sigma: float, offset: float = 0.0) -> ScoreMap:
    """A head's output float32 [N, 1, h, w] (minus ``offset``) as patch maps; image score = the
    largest patch score."""
    maps = features[output_name][:, 0].astype(np.float32)
    if offset:
        maps = maps - np.float32(offset)
    return score_patch_maps(maps, input_hw, sigma)


class Method(Protocol):
    """A method module (see the module docstring), as the registry holds it."""

    NAME: str
    Config: type[MethodConfig]
    Params: type[MethodParams]
    State: type
    HEAD: Optional[EngineHead]

    def score(self, state: Any, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap: ...
