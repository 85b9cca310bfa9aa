"""Golden-sample calibration: fit a scorer from defect-free images and set its thresholds.

1. read the golden folder (unreadable files listed and skipped);
2. export the feature network to ONNX and extract features with the configured engine (so the
   thresholds belong to the engine and precision the line will run);
   (with --augment, each golden image also gets jittered copies: calibration/augment.py);
3. hold out a share of the original images, fit on the rest (and their copies; never the copies
   of a held-out image; a fit that holds images out itself gets each copy's original as its group),
   score the held-out ones. A method that declares an engine head (Deep
   SVDD, the autoencoder: inspector/methods/base.py) has backbone + head exported as ONE ONNX
   network (output ``HEAD.output_name``) and the held-out images scored through the engine, as
   the daemon will;
4. image threshold by calibration.threshold.rule: ``budget`` (default: rejects
   calibration.false_reject_budget of good parts, calibration/thresholds.py) or ``quantile_margin``
   (Q_q + margin * (Q_q - median)) of held-out image scores; pixel threshold the same rule on the
   maxima of the held-out smoothed maps (so a good part rarely shows a region);
5. escape rates: synthetic defects pasted into the held-out images (and the --defects images)
   scored the same way, counted against the image threshold (calibration/detectability.py);
6. optionally refit on all images (for a method without an engine head, on a thread beside steps
   3-5, which do not depend on it); write the bundle (+ report.html).

A method that trains on labelled defects (``USES_DEFECTS``, e.g. ``supervised``) needs --defects:
their features (same engine and preprocessing) go to its fit beside the golden ones.

Every engine opened here is closed on every path, a failed fit included.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from calibration import heldout, pose_auto
from calibration.ahead import Background
from calibration.augment import origin_ids
from calibration.bundle import write_bundle
from calibration.bundle_dir import check_out_dir
from calibration.detectability import Detectability
from calibration.feature_reuse import FeatureReuse, reuse_key
from calibration.features import INPUT_NAME, OUTPUT_NAME, extract_features, run_images
from calibration.geometry import choose_geometry
from calibration.golden import GoldenSet
from calibration.golden_split import enough_originals, load_golden, split_originals
from calibration.methods import fit_method, resolve_config
from calibration.methods import pose
from calibration.methods.coreset import limited_blas
from calibration.methods.global_context import group_ids
from calibration.network import NetworkAhead, export_network, opened_engine
from calibration.progress import Bar, timed
from calibration.thresholds import Threshold
from calibration.tile_memo import TileMemo
from engines.base import normalise_precision
from inspector.bundle import ALIGN_REFERENCE
from inspector.errors import InspectorError
from inspector.manifest import BundleManifest
from inspector.methods import search_memo
from inspector.methods.global_context import PoseDecision
from inspector.methods.registry import Scorer, method_of
from inspector.methods.search_memo import SearchMemo
from inspector.preprocess import Preprocessor
from inspector.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    bundle_dir: Path
    bundle_id: str
    images_used: int
    images_skipped: list[tuple[str, str]]
    holdout_names: list[str]
    holdout_scores: np.ndarray
    holdout_map_maxima: np.ndarray
    holdout_maps: Optional[np.ndarray]  # float32 [n_holdout, H, W] smoothed maps, for the report
    holdout_images: list  # the held-out originals (BGR/grey uint8), for the report's heatmaps
    image_threshold: Threshold
    pixel_threshold: Threshold
    bank_size: int
    manifest: Optional[BundleManifest]  # as written into the bundle (None: evaluate_only)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    augmented_copies: int = 0  # how many of images_used are jittered copies (calibrate --augment)
    detectability: Optional[Detectability] = None  # escape rates at the image threshold (None: not estimated)
    warnings: list[str] = field(default_factory=list)  # one line each; also in the manifest and report
    geometry_notes: list = field(default_factory=list)  # why the geometry is not what was asked (summary)
    align_auto: Optional[dict] = None  # preprocess.align auto: the decision (calibration/pose_auto.py record)


def _fit(settings: Settings, feats: np.ndarray, groups: np.ndarray, precision: str, bar: Bar, desc: str,
         defects: Optional[np.ndarray] = None):
    """The configured method fitted on ``feats`` (and, for a method that uses them, the labelled
    defect images' features), adapted to the engine's precision. groups: int [N], each row's
    original golden image (augmented copies share it)."""
    method = method_of(settings.scorer.method)
    with bar.steps(desc) as progress:
        state = fit_method(settings.scorer, feats, settings.calibration.seed, progress, defects=defects,
                           groups=groups)
    adapt = getattr(method, "for_engine", None)
    return adapt(state, normalise_precision(precision)) if adapt else state


def calibrate(settings: Settings, golden_dir: str | Path, out_dir: Optional[str | Path], *, progress: bool = True,
              golden: Optional[GoldenSet] = None, augment: Optional[int] = None,
              defects_dir: Optional[str | Path] = None, force: bool = False, evaluate_only: bool = False,
              auto_evidence: Optional[dict] = None, reuse: Optional[FeatureReuse] = None) -> CalibrationResult:
    """Fit the configured method on ``golden_dir`` and write the bundle (``_calibrate``, below, has the
    steps); with ``preprocess.align.enabled: auto`` (the default) pose normalisation is decided on the
    way (calibration/pose_auto.py): tried only when the golden parts turn or move, kept only when
    they then read as one pose; also for ``evaluate_only`` and under ``calibrate --auto``, whose
    candidates (``reuse``) then share both tries' features. ``result.align_auto`` says what was decided."""
    run = functools.partial(_calibrate, golden_dir=golden_dir, out_dir=out_dir, progress=progress, augment=augment,
                            defects_dir=defects_dir, force=force, evaluate_only=evaluate_only,
                            auto_evidence=auto_evidence)
    if settings.preprocess.align.enabled != "auto":
        return run(settings, golden=golden, reuse=reuse)
    plain = pose_auto.with_align(settings, enabled=False)
    keep = reuse if reuse is not None else FeatureReuse()  # --auto's candidates share both tries' features
    try:
        return run(plain, golden=golden, reuse=reuse, turning_to=keep)
    except pose_auto.TurningPart as turning:
        golden = turning.golden  # read once
        log.info("the golden parts turn or move (twin ratio %s): trying pose normalisation",
                 turning.decision.twin_ratio)
        posed = pose_auto.with_align(settings, enabled=True, motion="pose")
        try:
            return run(posed, golden=golden, plain_pose=turning.decision, reuse=reuse)
        except pose_auto.PoseNoBetter as no:
            why, after = f"the parts still read as turning ({no.decision.twin_ratio})", no.decision
        except InspectorError as exc:  # no part, a round one, not found often enough...
            why, after = str(exc), None
        log.info("pose normalisation not kept: %s", why)
        return run(plain, golden=golden, reuse=keep, align_auto=pose_auto.dropped(turning.decision, why, after))


def _calibrate(settings: Settings, golden_dir: str | Path, out_dir: Optional[str | Path], *, progress: bool = True,
               golden: Optional[GoldenSet] = None, augment: Optional[int] = None,
               defects_dir: Optional[str | Path] = None, force: bool = False, evaluate_only: bool = False,
               auto_evidence: Optional[dict] = None, reuse: Optional[FeatureReuse] = None,
               turning_to: Optional[FeatureReuse] = None, plain_pose: Optional[PoseDecision] = None,
               align_auto: Optional[dict] = None) -> CalibrationResult:
    """Fit the configured method on ``golden_dir`` (or the given ``golden`` set) and write the
    bundle to ``out_dir``. augment: jittered copies per golden image (None: calibration.augment.copies;
    ignored when ``golden`` already holds copies). defects_dir: known-defect images, whose escape
    rate at the threshold goes into the bundle beside the synthetic defects'. force: replace a
    non-empty ``out_dir`` that is not a bundle (never the golden folder or one holding it; see
    calibration/bundle_dir.py). evaluate_only: stop after the escape rates (no refit, no bundle;
    ``calibrate --auto`` compares candidates so); auto_evidence: what ``calibrate --auto``
    compared, recorded in the manifest; reuse: golden features shared with other calibrations of
    the same images, geometry and network (calibration/feature_reuse.py). For preprocess.align auto
    (calibration/pose_auto.py): turning_to: the frames as they come are being tried; if the golden
    parts turn or move, their features go there and TurningPart is raised; plain_pose: the first
    try's decision, this try is pose-normalised (PoseNoBetter if the parts still turn); align_auto:
    the decision already made, recorded in the bundle."""
    golden_dir = Path(golden_dir)
    if defects_dir is not None and not Path(defects_dir).is_dir():
        raise InspectorError(f"defects folder {defects_dir}: not found; pass --defects with a folder of "
                             f"known-defect images, or leave it out")
    if golden is None and not golden_dir.is_dir():
        raise InspectorError(f"golden folder {golden_dir}: not found; pass --golden with a folder of good-part images")
    if out_dir is not None:
        check_out_dir(out_dir, golden_dir, force=force)  # before any work: refused now, not after minutes
    bar, times, cal = Bar(progress), {}, settings.calibration
    method = method_of(settings.scorer.method)
    uses_defects = getattr(method, "USES_DEFECTS", False)
    if uses_defects and defects_dir is None:
        raise InspectorError(f"scorer {method.NAME} trains on labelled defects: pass --defects DIR with a "
                             f"folder of defect images, or pick an unsupervised scorer")
    with ExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="inspector-calibrate-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)  # also when calibration fails
        # the network is exported while the golden images are read (calibration/network.py); not
        # for pose normalisation, whose network input is the golden parts' box
        ahead = None
        if golden is None and not (settings.preprocess.align.enabled is True
                                   and settings.preprocess.align.motion == "pose"):
            ahead = cleanup.enter_context(NetworkAhead(settings, golden_dir, workdir))
        with timed(times, "read"):
            golden, originals = load_golden(settings, golden_dir, golden, augment, bar)

        with timed(times, "export"):
            geometry = choose_geometry(settings.preprocess, cal.min_defect_px, [im.shape for im in golden.images])
            pspec, reference = geometry.spec, None
            if pspec.align is not None:
                from calibration.reference import golden_pose, golden_reference

                if pspec.align.motion == "pose":  # the work image becomes the part's box
                    golden, reference, pspec = golden_pose(golden, pspec, settings.preprocess.tile)
                else:
                    golden, reference = golden_reference(golden, pspec)
                originals = enough_originals(golden, cal.min_images, f"golden folder {golden_dir}: only {{n}} images "
                                             f"register to the golden reference (need {cal.min_images}); see the "
                                             f"warnings above, or turn preprocess.align off")
            pre = Preprocessor(pspec, reference=reference)
            input_hw = (pspec.height, pspec.width)  # the network input (one tile)
            made = ahead.take(input_hw) if ahead is not None else None
            network, engine = made if made is not None else export_network(settings, input_hw, workdir)
            cleanup.callback(engine.close)
            description = network.description
            check_calibration_engine = getattr(method, "check_calibration_engine", None)
            if check_calibration_engine:  # a method the configured engine cannot run (AnoDDPM steps on a CPU)
                check_calibration_engine(settings.scorer, engine)  # refused now, not at load after the fit
        fit_idx, hold_idx = split_originals(golden.names, cal.holdout, cal.seed)
        # the escape-rate step runs the held-out images again with defects pasted in: the tiles a
        # defect does not touch come from here, and so do their nearest-neighbour answers
        key = reuse_key(pspec.to_json(), description, engine, golden, hold_idx) if reuse or turning_to else ""
        extracted = reuse.get(key) if reuse is not None else None
        tiles_seen, rows_seen = TileMemo(engine, outputs=extracted.tiles if extracted else None), SearchMemo()
        reuse_tiles = pre.grid.tiled and method.HEAD is None  # the escape-rate step runs this very engine
        with timed(times, "features"), bar(len(golden.images), "extracting features") as pb:
            if extracted is not None:
                feats = extracted.feats
                pb.update(len(golden.images))
            else:
                feats = extract_features(engine, pre, golden.images, batch=engine.spec.max_batch,
                                         progress=pb.update, keep=hold_idx,
                                         memo=tiles_seen if reuse_tiles else None)
                if reuse is not None:
                    reuse.put(key, feats, tiles_seen.outputs)
        defect_images = heldout.read_defects(defects_dir, settings) if defects_dir is not None else None
        defect_feats = heldout.defect_features(engine, pre, defect_images, defects_dir, bar) if uses_defects else None

        # --- fit on part, score the held-out rest through the network the line will run
        groups = origin_ids(golden.names)  # a copy goes with its original wherever a fit holds images out
        # what the config leaves to the golden images, decided once: both fits must score alike
        with timed(times, "decide"):
            now = None  # the fixed-pose rule on these features, when preprocess.align auto asked it
            if turning_to is not None or plain_pose is not None:  # preprocess.align auto
                now = pose.decide(feats, pose_auto.CUT, cal.seed, group_ids(len(feats), groups))
                if turning_to is not None and not now.enabled and now.twin_ratio is not None:
                    turning_to.put(key, feats, tiles_seen.outputs)  # the frames as they come, if pose does not help
                    raise pose_auto.TurningPart(now, golden)
                if plain_pose is not None and not now.enabled:
                    raise pose_auto.PoseNoBetter(now)
                align_auto = pose_auto.fixed(now) if plain_pose is None else pose_auto.kept(plain_pose, now)
            # the inspected area in feature cells; the grid's padding lies below and right of it
            content_cells = (pre.grid.content_h * feats.shape[2] / pre.grid.work_h,
                             pre.grid.content_w * feats.shape[3] / pre.grid.work_w)
            settings = settings.model_copy(update={"scorer": resolve_config(
                settings.scorer, feats, cal.seed, groups, known_pose=now, content_hw=content_cells)})
        held_images = [golden.images[i] for i in hold_idx]
        refit = None
        # while two fits run at once, half the cores' BLAS threads each; taken and lifted here, on
        # this thread, while no other thread is in a BLAS call (see coreset.limited_blas); unwound
        # after the refit thread has been waited for
        blas_hold = cleanup.enter_context(ExitStack())

        def lift_blas_hold_once_refit_ended():
            if refit is None or refit.done():
                blas_hold.close()

        if cal.refit_on_all and not evaluate_only and method.HEAD is None:
            # the refit does not depend on the held-out steps: run it beside them, since neither
            # keeps both cores busy (the coreset picks on one BLAS thread, the engine waits on
            # decoding and scoring); a head method's refit trains a network, and stays after them
            blas_hold.enter_context(limited_blas(max(1, (os.cpu_count() or 2) // 2)))
            refit = cleanup.enter_context(Background(times, "fit_all", lambda: _fit(
                settings, feats, groups, engine.precision, Bar(False), "fitting (all golden images)", defect_feats)))
        with timed(times, "fit_split"):
            state = _fit(settings, feats[fit_idx], groups[fit_idx], engine.precision, bar,
                         "fitting (held-out split)", defect_feats)
        lift_blas_hold_once_refit_ended()
        with ExitStack() as head_scope:  # a head network's engine lives until the escape rates are known
            with timed(times, "thresholds"):
                onnx_held, description_held, output_held = network.with_head(state, method)
                scoring_engine = engine
                if method.HEAD is not None:
                    scoring_engine = head_scope.enter_context(opened_engine(
                        settings.engine, network.spec(onnx_held, output_held, description_held)))
                    outputs = run_images(scoring_engine, pre, held_images, batch=scoring_engine.spec.max_batch)
                else:
                    outputs = {OUTPUT_NAME: feats[hold_idx]}
                with search_memo.remembering(rows_seen):
                    held = heldout.HeldOut.measure(Scorer(method, state), outputs, pre, cal,
                                            between=lift_blas_hold_once_refit_ended, images=held_images)
                if uses_defects:
                    held.warnings.append(heldout.TRAINED_ON_DEFECTS)
                    log.warning("%s", heldout.TRAINED_ON_DEFECTS)
            lift_blas_hold_once_refit_ended()
            with timed(times, "detectability"), search_memo.reusing(rows_seen):  # escape rates at that threshold
                known_tiles = tiles_seen.engine() if reuse_tiles else scoring_engine
                detectability = heldout.detectability(
                    heldout.image_scorer(known_tiles, pre, Scorer(method, state), input_hw), held_images,
                    held.image_threshold.value, settings, defect_images, bar)
            log.debug("escape rates: %d tiles from memory, %d run; %d rows' neighbours from memory, %d searched",
                      tiles_seen.hits, tiles_seen.ran, rows_seen.hits, rows_seen.searched)
            # their memory goes before the refit is awaited (the tiles stay where --auto shares them)
            del tiles_seen, rows_seen, known_tiles
        if evaluate_only:
            return CalibrationResult(
                bundle_dir=Path(out_dir) if out_dir else Path(), bundle_id="", images_used=len(golden.images),
                images_skipped=golden.skipped, holdout_names=[golden.names[i] for i in hold_idx],
                holdout_scores=held.scores, holdout_map_maxima=held.map_maxima, holdout_maps=None, holdout_images=[],
                image_threshold=held.image_threshold, pixel_threshold=held.pixel_threshold, bank_size=0,
                manifest=None, stage_seconds=times, detectability=detectability, warnings=held.warnings,
                align_auto=align_auto)

        if refit is not None:
            with timed(times, "fit_all_wait"):
                state = refit.result()
            lift_blas_hold_once_refit_ended()
        elif cal.refit_on_all:
            with timed(times, "fit_all"):
                state = _fit(settings, feats, groups, engine.precision, bar, "fitting (all golden images)",
                             defect_feats)
        with timed(times, "write"):
            if cal.refit_on_all:  # else the held-out step's network is this very one
                onnx_held, description_held, output_held = network.with_head(state, method)
            arrays = state.arrays() if reference is None else {**state.arrays(), ALIGN_REFERENCE: reference}
            manifest = {
                "preprocess": pose_auto.stamp(pspec, align_auto).to_json(),
                "network": description_held,
                "engine": {"onnx": onnx_held.name, "input_name": INPUT_NAME, "input_shape": [3, *input_hw],
                           "output_names": [output_held], "calibrated_engine": engine.kind,
                           "calibrated_precision": engine.precision},
                "scorer": {"type": settings.scorer.type, "params": state.params.model_dump(mode="json")},
                **held.manifest_sections(),
                "golden": {"folder": str(golden_dir), "images": len(golden.images),
                           "skipped": [n for n, _ in golden.skipped], "sha256": golden.sha256,
                           "holdout": len(hold_idx), "refit_on_all": cal.refit_on_all, "seed": cal.seed,
                           "augmented_copies": len(golden.images) - originals},
                "detectability": detectability.to_json() if detectability is not None else None,
                "auto": auto_evidence,
            }
            manifest["metrics"]["seconds"] = {k: round(v, 3) for k, v in times.items()}
            written = write_bundle(out_dir, manifest, arrays, onnx_held)
    bank = getattr(state, "memory_bank", None)
    return CalibrationResult(
        bundle_dir=Path(out_dir), bundle_id=written.bundle_id, images_used=len(golden.images),
        images_skipped=golden.skipped, augmented_copies=len(golden.images) - originals,
        holdout_names=[golden.names[i] for i in hold_idx], holdout_scores=held.scores,
        holdout_map_maxima=held.map_maxima, holdout_maps=held.maps, holdout_images=held_images,
        image_threshold=held.image_threshold, pixel_threshold=held.pixel_threshold,
        bank_size=0 if bank is None else len(bank), stage_seconds=times, manifest=written, warnings=held.warnings,
        detectability=detectability,
        geometry_notes=list(geometry.notes), align_auto=align_auto,
    )
