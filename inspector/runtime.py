"""Assembling the inspection pipeline from a bundle and the config, with the start-up checks
that keep a bundle and a line from being silently mismatched."""
from __future__ import annotations

import logging
from typing import Optional

from engines.base import EngineError, EngineUnavailable, normalise_precision
from engines.registry import build_engine
from inspector.bundle import Bundle
from inspector.errors import BundleError, InspectorError
from inspector.pipeline import InspectionPipeline
from inspector.tiling import TileGrid
from inspector.verdict import Judge

log = logging.getLogger(__name__)


def check_preprocess_matches(bundle: Bundle, settings) -> None:
    """A config that states its preprocessing must agree with the bundle's (else the scores
    and thresholds mean nothing). A config that omits the section takes the bundle's; within
    it, a geometry left at ``auto`` (size, scale) or unset (tile, tile_overlap) takes the
    bundle's, one stated explicitly must match it."""
    if "preprocess" not in settings.explicit_sections:
        return
    cfg = settings.preprocess
    theirs = bundle.preprocess
    hint = "recalibrate or remove the preprocess section"
    if cfg.size != "auto" and tuple(cfg.size) != theirs.canvas_size:  # align pose: work is the part's box
        cw, ch = theirs.canvas_size
        raise BundleError(f"bundle {bundle.path} was calibrated with preprocess size {cw}x{ch}, the config "
                          f"says {cfg.size[0]}x{cfg.size[1]}; {hint}")
    if cfg.scale != "auto" and (theirs.frame_scale is None or abs(cfg.scale - theirs.frame_scale) > 1e-6 * cfg.scale):
        raise BundleError(f"bundle {bundle.path} was calibrated with preprocess scale {theirs.frame_scale}, the config "
                          f"says {cfg.scale}; {hint}")
    if "tile" in cfg.model_fields_set:
        # the bundle's network input is the tile, shrunk to the work image where that is smaller
        expect = TileGrid.plan(*theirs.work_size, *cfg.tile, theirs.tile_overlap).tile_hw
        if expect != (theirs.height, theirs.width):
            raise BundleError(f"bundle {bundle.path} was calibrated with network input {theirs.width}x{theirs.height}, "
                              f"the config's preprocess tile {cfg.tile[0]}x{cfg.tile[1]} makes "
                              f"{expect[1]}x{expect[0]}; {hint}")
    if "tile_overlap" in cfg.model_fields_set and theirs.grid.tiled and cfg.tile_overlap != theirs.tile_overlap:
        raise BundleError(f"bundle {bundle.path} was calibrated with preprocess tile_overlap {theirs.tile_overlap}, "
                          f"the config says {cfg.tile_overlap}; {hint}")
    if cfg.roi != theirs.roi:
        raise BundleError(f"bundle {bundle.path} was calibrated with preprocess roi {theirs.roi}, the config says "
                          f"{cfg.roi}; {hint}")
    mine_align = cfg.align.spec()
    auto_chose = cfg.align.enabled == "auto" and (theirs.align is None or theirs.align.motion == "pose")
    if mine_align != theirs.align and not auto_chose:
        raise BundleError(
            f"bundle {bundle.path} was calibrated with preprocess.align {_align_words(theirs.align)}, the config says "
            f"{_align_words(mine_align)}; {hint}")


def _align_words(spec) -> str:
    return "off" if spec is None else ", ".join(f"{k} {v}" for k, v in spec.to_json().items())


def check_precision(bundle: Bundle, engine) -> None:
    """Thresholds belong to the (bundle, engine precision) pair: never mix them silently.
    Raises BundleError (one line) when the engine runs another precision than calibration did."""
    want = normalise_precision(bundle.calibrated_precision)
    have = normalise_precision(engine.precision)
    if have != want:
        calibrated_on = bundle.manifest.engine.calibrated_engine
        raise BundleError(
            f"bundle {bundle.path} was calibrated on {calibrated_on} at {want}, but engine {engine.kind} runs {have}: "
            f"thresholds do not carry across precisions; recalibrate with this engine config "
            f"(inspector calibrate --config <this config> --golden DIR --out BUNDLE) or run an engine at {want}"
        )


def follow_bundle_precision(bundle: Bundle, engine_config):
    """``precision: auto`` on the line means: the precision the bundle was calibrated at, where
    this CPU can run it. So an fp32 bundle (an older one, or one made on a CPU without bf16) keeps
    running on a bf16 CPU, at fp32; only a bf16 bundle on a CPU without bf16 is refused.
    (At calibration ``auto`` picks the fastest precision the CPU has.)"""
    if getattr(engine_config, "precision", None) != "auto":
        return engine_config
    from engines.openvino_engine import default_precision

    want = normalise_precision(bundle.calibrated_precision)
    if want not in ("fp32", "bf16"):
        return engine_config  # e.g. an fp16 TensorRT bundle: check_precision refuses it below
    here = default_precision()
    if want == "bf16" and here != "bf16":
        raise BundleError(f"bundle {bundle.path} was calibrated at bf16 and this CPU has no bf16 support; "
                          f"recalibrate on this machine (engine.precision auto picks fp32 here)")
    if want == "fp32" and here == "bf16":
        log.info("bundle %s was calibrated at fp32: running fp32 (recalibrating on this CPU would run bf16, "
                 "about 40%% less time per frame)", bundle.id)
    return engine_config.model_copy(update={"precision": want})


def build_pipeline(bundle: Bundle, engine_config, roi_by_source: Optional[dict] = None, *,
                   maps_for_passes: bool = True) -> InspectionPipeline:
    engine_config = follow_bundle_precision(bundle, engine_config)
    spec = bundle.engine_spec(max_batch=engine_config.max_batch)
    try:
        engine = build_engine(engine_config, spec)
    except (EngineUnavailable, EngineError) as exc:
        raise InspectorError(f"engine {engine_config.type}: {exc}") from None
    try:
        check_precision(bundle, engine)
        scorer = bundle.scorer()
        check_engine = getattr(scorer.method, "check_engine", None)  # a method that needs some engine (a GPU)
        if check_engine:
            check_engine(scorer.state, engine)
    except Exception:
        engine.close()
        raise
    pre = bundle.preprocessor(roi_by_source)
    judge = Judge(bundle.image_threshold, bundle.pixel_threshold, input_area=pre.spec.width * pre.spec.height)
    search = getattr(scorer.state.params, "search", None)
    log.info("pipeline: bundle %s (%s/%s), engine %s %s, %s, threshold %.4f%s", bundle.id, bundle.scorer_type,
             scorer.name, engine.kind, engine.precision, pre.spec.describe(), judge.image_threshold,
             f", kNN search {search}" if search else "")
    return InspectionPipeline(pre, engine, scorer, judge, bundle.id, maps_for_passes=maps_for_passes)
