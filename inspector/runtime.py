"""Assembling the inspection pipeline from a bundle and the config, with the start-up checks
that keep a bundle and a line from being silently mismatched."""
from __future__ import annotations

import logging
from typing import Optional

from engines.base import EngineError, EngineUnavailable
from engines.registry import build_engine
from inspector.bundle import Bundle
from inspector.errors import BundleError, ConfigError, InspectorError
from inspector.pipeline import InspectionPipeline
from inspector.preprocess import Preprocessor, PreprocessSpec
from inspector.scoring.registry import scorer_from_bundle
from inspector.verdict import Judge

log = logging.getLogger(__name__)


def check_preprocess_matches(bundle: Bundle, settings) -> None:
    """A config that states its preprocessing must agree with the bundle's (else the scores
    and thresholds mean nothing). A config that omits the section takes the bundle's."""
    if "preprocess" not in settings.explicit_sections:
        return
    width, height = settings.preprocess.size
    mine = PreprocessSpec(width, height, settings.preprocess.roi)
    theirs = bundle.preprocess
    if (mine.width, mine.height, mine.roi) != (theirs.width, theirs.height, theirs.roi):
        raise BundleError(
            f"bundle {bundle.path} was calibrated with preprocess size {theirs.width}x{theirs.height} roi {theirs.roi}, "
            f"the config says {mine.width}x{mine.height} roi {mine.roi}; recalibrate or remove the preprocess section"
        )


def check_precision(bundle: Bundle, engine) -> None:
    """Thresholds belong to the (bundle, engine precision) pair: never mix them silently."""
    want = bundle.calibrated_precision
    if engine.precision != want:
        raise BundleError(
            f"bundle {bundle.path} was calibrated with {want} features, engine {engine.kind} runs {engine.precision}; "
            f"recalibrate with this engine (inspector calibrate --config ...) or set the engine precision to {want}"
        )


def build_pipeline(bundle: Bundle, engine_config, roi_by_source: Optional[dict] = None) -> InspectionPipeline:
    spec = bundle.engine_spec(max_batch=engine_config.max_batch)
    try:
        engine = build_engine(engine_config, spec)
    except EngineUnavailable as exc:
        raise InspectorError(f"engine {engine_config.type}: {exc}") from None
    except EngineError as exc:
        raise InspectorError(f"engine {engine_config.type}: {exc}") from None
    try:
        check_precision(bundle, engine)
    except BundleError:
        engine.close()
        raise
    try:
        scorer = scorer_from_bundle(bundle.scorer_type, bundle.scorer_params, bundle.arrays)
    except KeyError as exc:
        raise BundleError(f"bundle {bundle.path}: {exc.args[0]}; this inspector cannot score it") from None
    judge = Judge(bundle.image_threshold, bundle.pixel_threshold)
    pre = Preprocessor(bundle.preprocess, roi_by_source)
    log.info("pipeline: bundle %s (%s), engine %s %s, input %dx%d, threshold %.4f", bundle.id, bundle.scorer_type,
             engine.kind, engine.precision, pre.spec.width, pre.spec.height, judge.image_threshold)
    return InspectionPipeline(pre, engine, scorer, judge, bundle.id)
