"""A bundle's manifest.json as one typed model.

Calibration writes the manifest through ``BundleManifest`` (calibration/bundle.py) and the daemon
reads it back through the same class (inspector/bundle.py), so every field is checked the same
way at both ends: finite thresholds, positive sizes, sha256 hashes present, the engine input
agreeing with the preprocessing, a method this inspector knows with its params typed by the
method (inspector/methods/<method>.py Params). Nothing in a manifest is
trusted as it stands; a field that does not validate refuses the bundle with one line.

The manifest also covers itself: ``manifest_sha256`` is the sha256 of the canonical JSON
(sorted keys, no spaces) of the manifest without that key. An edit that does not recompute it
refuses the bundle as corrupt or edited.

Deliberately no import of OpenCV/torch here (the storage layer may read manifests).
"""
from __future__ import annotations

import hashlib
import json
import math
from datetime import datetime
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import Annotated

from engines.base import PRECISION_NAMES
from inspector.methods.registry import ScorerParams, method_name

SCHEMA_VERSION = 2  # 2: typed, self-checksummed manifest (1: no checksum; refused, recalibrate)
CHECKSUM_KEY = "manifest_sha256"

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Share = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
# a file inside the bundle folder: a plain name, never a path out of it
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", max_length=255)]


class _Section(BaseModel):
    # strict: no "128" for 128, no 1 for True; forbid: every key the writer writes is modelled,
    # so an unknown key is an edit (or a newer writer)
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def _check_json_tree(value: Any, where: str) -> Any:
    """Free-form manifest parts (network description, evidence): JSON types only, every
    number finite."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value}, not a finite number")
        return value
    if isinstance(value, list):
        return [_check_json_tree(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{where} has a non-string key {k!r}")
            out[k] = _check_json_tree(v, f"{where}.{k}")
        return out
    raise ValueError(f"{where} holds a {type(value).__name__}, not a JSON value")


class AlignSection(_Section):
    """preprocess.align: registration to the golden reference (inspector/align.py)."""

    motion: Literal["translation", "euclidean", "affine", "pose"]
    max_shift: float = Field(gt=0.0, le=0.5, allow_inf_nan=False)
    max_rotation_deg: float = Field(gt=0.0, le=90.0, allow_inf_nan=False)
    min_correlation: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False)


class AlignAutoSection(_Section):
    """preprocess.align.enabled auto: calibration's decision (calibration/pose_auto.py)."""

    enabled: bool  # pose normalisation on
    twin_ratio: Optional[float] = Field(None, ge=0.0, allow_inf_nan=False)  # the golden frames as they come
    posed_twin_ratio: Optional[float] = Field(None, ge=0.0, allow_inf_nan=False)  # after pose normalisation, if tried
    cut: float = Field(gt=0.0, lt=1.0, allow_inf_nan=False)
    reason: NonEmptyStr


class PreprocessSection(_Section):
    width: int = Field(ge=32, le=4096, multiple_of=32)
    height: int = Field(ge=32, le=4096, multiple_of=32)
    roi: Optional[list[int]] = Field(None, min_length=4, max_length=4)  # x, y, w, h
    color: Literal["rgb"]
    scale: Literal["0..1"]
    align: Optional[AlignSection]
    # geometry (inspector/tiling.py); absent in bundles made before tiling: one untiled input
    work_size: Optional[list[Annotated[int, Field(gt=0, le=65536)]]] = Field(None, min_length=2, max_length=2)
    tile_overlap: int = Field(0, ge=0, le=4096)
    # align motion pose: the size the ROI crop is resized to before the pose warp (work_size is then the box)
    canvas: Optional[list[Annotated[int, Field(gt=0, le=65536)]]] = Field(None, min_length=2, max_length=2)
    tiles: int = Field(1, ge=1, le=4096)
    frame_scale: Optional[float] = Field(None, gt=0.0, le=64.0, allow_inf_nan=False)
    min_defect_px: Optional[float] = Field(None, gt=0.0, le=4096.0, allow_inf_nan=False)
    align_auto: Optional[AlignAutoSection] = None

    @field_validator("roi")
    @classmethod
    def _roi_inside(cls, v):
        if v is not None and (v[0] < 0 or v[1] < 0 or v[2] <= 0 or v[3] <= 0):
            raise ValueError(f"roi {v} needs x, y >= 0 and w, h > 0")
        return v

    def spec(self):
        """The runtime PreprocessSpec (imported here: it pulls in OpenCV)."""
        from inspector.preprocess import PreprocessSpec

        return PreprocessSpec.from_json(self.model_dump(mode="json"))

    @classmethod
    def from_spec(cls, spec) -> "PreprocessSection":
        return cls.model_validate(spec.to_json())


class NetworkSection(_Section):
    """The feature network's description; the torch engine rebuilds the network from it (the
    other engines read the ONNX). Its details belong to engines/backbones, so keys beyond these
    are kept as they are, checked to be plain JSON with finite numbers."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    kind: Literal["patch_features", "patch_features_head"]
    backbone: NonEmptyStr
    weights_sha256: Sha256Hex
    feature_dim: Optional[int] = Field(None, gt=0)
    stride: int = Field(gt=0)

    @model_validator(mode="after")
    def _extras_are_json(self):
        for k, v in (self.model_extra or {}).items():
            _check_json_tree(v, f"network.{k}")
        return self

    def as_dict(self) -> dict:
        return self.model_dump(mode="json")


PRECISIONS = tuple(PRECISION_NAMES)  # the spellings engines.base.normalise_precision reads


class EngineSection(_Section):
    onnx: FileName
    input_name: NonEmptyStr
    input_shape: list[Annotated[int, Field(gt=0)]] = Field(min_length=3, max_length=3)  # C, H, W
    output_names: list[NonEmptyStr] = Field(min_length=1)
    calibrated_engine: NonEmptyStr
    calibrated_precision: Literal[PRECISIONS]


class ScorerSection(_Section):
    """``type`` the family, ``params`` the method's typed params (inspector/methods/<method>.py
    Params, chosen by ``params.method``; bundles without one were their family's first method)."""

    type: NonEmptyStr
    params: ScorerParams

    @model_validator(mode="before")
    @classmethod
    def _known_method(cls, data):
        if isinstance(data, dict) and isinstance(data.get("params"), dict) and isinstance(data.get("type"), str):
            try:
                name = method_name(data["type"], data["params"].get("method"))
            except ValueError as exc:
                raise ValueError(f"scorer {exc}") from None
            data = {**data, "params": {**data["params"], "method": name}}
        return data


class ThresholdRule(_Section):
    """How a threshold was set (calibration/thresholds.py Threshold.to_json)."""

    value: FiniteFloat
    quantile: float = Field(gt=0.5, le=1.0, allow_inf_nan=False)
    margin: float = Field(ge=0.0, le=10.0, allow_inf_nan=False)
    n: int = Field(ge=1)
    empirical_frr: Share
    normal_frr: Share
    frr_upper_95: Share  # one-sided 95% upper bound on the false-reject rate from the n scores
    rule: NonEmptyStr
    # rule "budget" (calibration.false_reject_budget) only
    false_reject_budget: Optional[float] = Field(None, gt=0.0, lt=0.5, allow_inf_nan=False)
    tail_model: Optional[Literal["empirical", "lognormal", "normal"]] = None
    expected_frr: Optional[Share] = None

    @model_validator(mode="after")
    def _bound_above_the_estimate(self):
        if self.frr_upper_95 < self.empirical_frr:
            raise ValueError(f"frr_upper_95 {self.frr_upper_95} is below empirical_frr {self.empirical_frr}")
        return self


class ThresholdsSection(_Section):
    image: FiniteFloat
    pixel: Optional[FiniteFloat]
    image_rule: ThresholdRule
    pixel_rule: Optional[ThresholdRule]

    @model_validator(mode="after")
    def _values_match_their_rules(self):
        if self.image != self.image_rule.value:
            raise ValueError(f"image {self.image} differs from image_rule.value {self.image_rule.value}")
        if (self.pixel is None) != (self.pixel_rule is None):
            raise ValueError("pixel and pixel_rule must both be set or both be null")
        if self.pixel is not None and self.pixel != self.pixel_rule.value:
            raise ValueError(f"pixel {self.pixel} differs from pixel_rule.value {self.pixel_rule.value}")
        return self


class GoldenSection(_Section):
    folder: str
    images: int = Field(ge=1)
    skipped: list[str]
    sha256: Sha256Hex
    holdout: int = Field(ge=1)
    refit_on_all: bool
    seed: int
    augmented_copies: int = Field(ge=0)


class MetricsSection(_Section):
    heldout_scores: list[FiniteFloat] = Field(min_length=1)
    heldout_map_maxima: list[FiniteFloat]
    seconds: dict[str, Annotated[float, Field(ge=0.0, allow_inf_nan=False)]]


class HashesSection(_Section):
    """sha256 of the bundle's files; the daemon compares them before loading anything."""

    arrays: Sha256Hex
    onnx: Sha256Hex


class BundleManifest(_Section):
    schema_version: Literal[SCHEMA_VERSION]
    inspector_version: NonEmptyStr
    created_at: NonEmptyStr  # ISO 8601 with its UTC offset
    bundle_id: Annotated[str, Field(pattern=r"^[0-9a-f]{12}$")]
    preprocess: PreprocessSection
    network: NetworkSection
    engine: EngineSection
    scorer: ScorerSection
    thresholds: ThresholdsSection
    golden: GoldenSection
    metrics: MetricsSection
    hashes: HashesSection
    warnings: list[NonEmptyStr]  # what calibrate warned about (few held-out images...), one line each
    # escape rates of synthetic (and --defects) defects at the image threshold (calibration/detectability.py)
    detectability: Optional[dict[str, Any]] = None
    auto: Optional[dict[str, Any]] = None  # calibrate --auto: the candidates compared, the one chosen
    manifest_sha256: Sha256Hex

    @field_validator("detectability", "auto")
    @classmethod
    def _plain_json(cls, v, info):
        return None if v is None else _check_json_tree(v, info.field_name)

    @field_validator("created_at")
    @classmethod
    def _iso_time(cls, v):
        try:
            at = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("not an ISO 8601 time") from None
        if at.tzinfo is None:
            raise ValueError("an ISO 8601 time without its UTC offset")
        return v

    @model_validator(mode="after")
    def _sections_agree(self):
        want = [3, self.preprocess.height, self.preprocess.width]
        if self.engine.input_shape != want:
            raise ValueError(f"engine.input_shape {self.engine.input_shape} is not [3, preprocess.height, "
                             f"preprocess.width] = {want}")
        n = self.thresholds.image_rule.n
        if not (n == self.golden.holdout == len(self.metrics.heldout_scores)):
            raise ValueError(f"thresholds.image_rule.n {n}, golden.holdout {self.golden.holdout} and "
                             f"{len(self.metrics.heldout_scores)} metrics.heldout_scores disagree")
        if self.golden.holdout >= self.golden.images:
            raise ValueError(f"golden.holdout {self.golden.holdout} is not fewer than golden.images "
                             f"{self.golden.images}")
        return self

    # ------------------------------------------------------------------ writing
    @classmethod
    def sealed(cls, content: dict[str, Any]) -> "BundleManifest":
        """Validate ``content`` (every field but the checksum) and add its checksum."""
        draft = cls.model_validate({**content, CHECKSUM_KEY: "0" * 64})
        body = draft.model_dump(mode="json", exclude={CHECKSUM_KEY})
        return draft.model_copy(update={CHECKSUM_KEY: canonical_sha256(body)})

    def to_json_text(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def as_dict(self) -> dict[str, Any]:
        """The manifest as plain JSON data (what the results database stores)."""
        return self.model_dump(mode="json")

    # ------------------------------------------------------------------ reading
    @classmethod
    def from_json_text(cls, text: str) -> "BundleManifest":
        """Parse, check the checksum, validate. Raises ManifestInvalid with one line (no
        ``manifest.json`` prefix: the caller names the bundle)."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ManifestInvalid(f"is not JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ManifestInvalid(f"is a JSON {type(raw).__name__}, not an object")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestInvalid(f"has schema version {version!r}, this inspector reads {SCHEMA_VERSION} "
                                  f"(made by another inspector version)")
        claimed = raw.get(CHECKSUM_KEY)
        if not isinstance(claimed, str):
            raise ManifestInvalid(f"has no {CHECKSUM_KEY} checksum of itself")
        body = {k: v for k, v in raw.items() if k != CHECKSUM_KEY}
        if canonical_sha256(body) != claimed:
            raise ManifestInvalid(f"does not match its {CHECKSUM_KEY} (corrupt or edited)")
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ManifestInvalid(validation_line(exc)) from None


class ManifestInvalid(ValueError):
    """A manifest that does not parse or validate; the message is one line."""


def canonical_sha256(data: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``data``: sorted keys, no spaces, UTF-8. Non-finite
    numbers are written as JSON's NaN/Infinity extensions so an edit to one still changes the hash."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def validation_line(exc: ValidationError) -> str:
    """The first problem of a pydantic ValidationError as one line: field path, what is wrong,
    the offending value (shortened)."""
    errors = exc.errors()
    e = errors[0]
    loc = ".".join(str(p) for p in e["loc"])
    msg = str(e["msg"]).replace("Value error, ", "")
    got = ""
    if e["type"] != "missing" and not isinstance(e.get("input"), dict):
        shown = repr(e.get("input"))
        got = f" (got {shown[:60]}{'...' if len(shown) > 60 else ''})"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return " ".join(f"{loc + ': ' if loc else ''}{msg}{got}{more}".split())
