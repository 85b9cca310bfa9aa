"""Golden-sample calibration: fit a scorer from defect-free images and set its thresholds.

1. read the golden folder (unreadable files listed and skipped);
2. export the feature network to ONNX and extract features with the configured engine (so the
   thresholds belong to the engine and precision the line will run);
   (with --augment, each golden image also gets jittered copies: calibration/augment.py);
3. hold out a share of the original images, fit on the rest (and their copies; never the copies
   of a held-out image), score the held-out ones. Fitters that train a head (Deep SVDD, the
   autoencoder) return its description in params["head"] and its weights as ``head.*`` arrays:
   the backbone + head is exported as ONE ONNX network (output ``patch_scores``) and the
   held-out images are scored through the engine, as the daemon will;
4. image threshold by calibration.threshold.rule: ``budget`` (default: rejects
   calibration.false_reject_budget of good parts, calibration/thresholds.py) or ``quantile_margin``
   (Q_q + margin * (Q_q - median)) of held-out image scores; pixel threshold the same rule on the
   maxima of the held-out smoothed maps (so a good part rarely shows a region);
5. escape rates: synthetic defects pasted into the held-out images (and the --defects images)
   scored the same way, counted against the image threshold (calibration/detectability.py);
6. optionally refit on all images; write the bundle (+ report.html).
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from calibration.augment import augment_golden, is_augmented, original_name
from calibration.bundle import write_bundle
from calibration.bundle_dir import check_out_dir
from calibration.detectability import Detectability, defect_sizes, estimate_detectability
from calibration.features import (INPUT_NAME, OUTPUT_NAME, export_feature_network, extract_features,
                                  network_description, run_images)
from calibration.fitters.registry import build_fitter
from calibration.fitters.training import split_rows
from calibration.geometry import choose_geometry
from calibration.golden import GoldenSet, list_images, read_golden
from calibration.reference import golden_reference
from calibration.thresholds import Threshold, budget_threshold, few_heldout_warning, quantile_margin_threshold
from engines.backbones.export import export_onnx
from engines.backbones.heads import build_head_network
from engines.base import EngineSpec, normalise_precision
from engines.registry import build_engine
from inspector.bundle import ALIGN_REFERENCE
from inspector.decode import FrameError
from inspector.errors import InspectorError
from inspector.manifest import BundleManifest
from inspector.preprocess import Preprocessor, PreprocessSpec
from inspector.scoring.registry import scorer_from_bundle, search_params
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


class _Bar:
    """tqdm bars on stderr, or nothing (tests, --quiet)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, total: Optional[int], desc: str):
        # on a terminal, a live bar; in a log (journald, CI), a line every few seconds
        interval = 0.1 if sys.stderr.isatty() else 5.0
        return tqdm(total=total, desc=desc, unit="img", disable=not self.enabled, leave=True, dynamic_ncols=True,
                    mininterval=interval)


def _enough_originals(golden: GoldenSet, minimum: int, message: str) -> int:
    """How many golden images are originals (not augmented copies); InspectorError(message with
    {n} filled in) when fewer than ``minimum``."""
    n = sum(not is_augmented(name) for name in golden.names)
    if n < minimum:
        raise InspectorError(message.format(n=n))
    return n


def _split_originals(names: list[str], share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices) over a golden set that may hold augmented copies: the
    split is drawn over the original images; held out are originals only, and the copies of a
    held-out image are in neither set. Without copies this is exactly ``split_rows``."""
    origins = [original_name(n) for n in names]
    unique = list(dict.fromkeys(origins))
    _, hold = split_rows(len(unique), share, seed)
    held = {unique[i] for i in hold}
    fit_idx = [i for i, o in enumerate(origins) if o not in held]
    hold_idx = [i for i, n in enumerate(names) if origins[i] in held and not is_augmented(n)]
    return np.array(fit_idx, np.int64), np.array(hold_idx, np.int64)


def _export_with_head(description: dict, params: dict, arrays: dict[str, np.ndarray], input_hw: tuple[int, int],
                      workdir: Path) -> tuple[Path, dict]:
    """Export backbone + the fitted head as one ONNX network in ``workdir`` (with the head
    weights beside it in arrays.npz, where the torch engine reads them), output
    ``params["output_name"]``; returns (onnx path, network description for the manifest)."""
    net_description = {**description, "kind": "patch_features_head", "head": params["head"]}
    np.savez(workdir / "arrays.npz", **{k: v for k, v in arrays.items() if k.startswith("head.")})
    net = build_head_network(net_description, arrays=arrays)
    onnx_path = export_onnx(net, workdir / "network.onnx", (3, *input_hw), INPUT_NAME, (params["output_name"],))
    return onnx_path, net_description


def calibrate(settings: Settings, golden_dir: str | Path, out_dir: Optional[str | Path], *, progress: bool = True,
              golden: Optional[GoldenSet] = None, augment: Optional[int] = None,
              defects_dir: Optional[str | Path] = None, force: bool = False, evaluate_only: bool = False,
              auto_evidence: Optional[dict] = None) -> CalibrationResult:
    """Fit the configured scorer on ``golden_dir`` (or the given ``golden`` set) and write the
    bundle to ``out_dir``. augment: jittered copies per golden image (None: calibration.augment.copies;
    ignored when ``golden`` already holds copies). defects_dir: known-defect images, whose escape
    rate at the threshold goes into the bundle beside the synthetic defects'. force: replace a
    non-empty ``out_dir`` that is not a bundle (never the golden folder or one holding it; see
    calibration/bundle_dir.py). evaluate_only: stop after the escape rates (no refit, no bundle;
    ``calibrate --auto`` compares candidates so); auto_evidence: what ``calibrate --auto``
    compared, recorded in the manifest."""
    if defects_dir is not None and not Path(defects_dir).is_dir():
        raise InspectorError(f"defects folder {defects_dir}: not found; pass --defects with a folder of "
                             f"known-defect images, or leave it out")
    bar = _Bar(progress)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    golden_dir = Path(golden_dir)
    if golden is None and not golden_dir.is_dir():
        raise InspectorError(f"golden folder {golden_dir}: not found; pass --golden with a folder of good-part images")
    if out_dir is not None:
        check_out_dir(out_dir, golden_dir, force=force)  # before any work: refused now, not after minutes
    if golden is None:
        with bar(len(list_images(golden_dir)), "reading golden images") as pb:
            golden = read_golden(golden_dir, max_pixels=settings.preprocess.max_pixels, progress=pb.update)
    for name, reason in golden.skipped:
        log.warning("skipped %s", reason)
    cal = settings.calibration
    originals = _enough_originals(golden, cal.min_images, f"golden folder {golden_dir}: {{n}} readable images "
                                  f"({len(golden.skipped)} skipped), need at least {cal.min_images} "
                                  f"(calibration.min_images)")
    copies = cal.augment.copies if augment is None else augment
    if copies and not any(is_augmented(n) for n in golden.names):
        golden = augment_golden(golden, copies, cal.seed, cal.augment)
        log.info("augmented: %d golden images -> %d", originals, len(golden.images))
    times["read"] = time.perf_counter() - t0

    # --- network and engine
    t0 = time.perf_counter()
    geometry = choose_geometry(settings.preprocess, cal.min_defect_px, [im.shape for im in golden.images])
    pspec = geometry.spec
    width, height = pspec.width, pspec.height  # the network input (one tile)
    reference = None
    if pspec.align is not None:
        golden, reference = golden_reference(golden, pspec)
        originals = _enough_originals(golden, cal.min_images, f"golden folder {golden_dir}: only {{n}} images "
                                      f"register to the golden reference (need {cal.min_images}); see the "
                                      f"warnings above, or turn preprocess.align off")
    pre = Preprocessor(pspec, reference=reference)
    description = network_description(settings.backbone)
    workdir = Path(tempfile.mkdtemp(prefix="inspector-calibrate-"))
    head_engine = None  # the held-out network with a trained head, when the scorer has one
    try:
        onnx_path, feature_dim = export_feature_network(description, (height, width), workdir / "backbone.onnx")
        description["feature_dim"] = feature_dim
        spec = EngineSpec(str(onnx_path), INPUT_NAME, (3, height, width), (OUTPUT_NAME,), network=description)
        engine = build_engine(settings.engine, spec)
        times["export"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with bar(len(golden.images), "extracting features") as pb:
            feats = extract_features(engine, pre, golden.images, batch=engine.spec.max_batch, progress=pb.update)
        times["features"] = time.perf_counter() - t0

        # --- fit on part, score the held-out rest
        fit_idx, hold_idx = _split_originals(golden.names, cal.holdout, cal.seed)
        fitter = build_fitter(settings.scorer, seed=cal.seed)
        t0 = time.perf_counter()
        params, arrays = _fit(fitter, feats[fit_idx], bar, "fitting (held-out split)")
        # the memory bank searches in bf16 when the engine runs bf16; recorded in the bundle
        search = search_params(settings.scorer.type, params.get("method"), normalise_precision(engine.precision))
        params = {**params, **search}
        times["fit_split"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer = scorer_from_bundle(settings.scorer.type, params, arrays)
        head_export = None
        if "head" in params:
            head_export = _export_with_head(description, params, arrays, (height, width), workdir)
            head_onnx, head_description = head_export
            head_spec = EngineSpec(str(head_onnx), INPUT_NAME, (3, height, width), (params["output_name"],),
                                   network=head_description)
            head_engine = build_engine(settings.engine, head_spec)  # closed after the escape rates
            held_outputs = run_images(head_engine, pre, [golden.images[i] for i in hold_idx],
                                      batch=head_engine.spec.max_batch)
        else:
            held_outputs = {OUTPUT_NAME: feats[hold_idx]}
        held = scorer.score(held_outputs, pre.grid.work_hw)
        held_scores = held.image_scores.astype(np.float64)
        held_maps = None if held.pixel_maps is None else pre.grid.content(held.pixel_maps)  # padding off
        held_max = (held_maps.reshape(len(hold_idx), -1).max(1) if held_maps is not None
                    else np.array([], np.float64))
        thr_image = _threshold(held_scores, cal)
        thr_pixel = _threshold(held_max, cal) if held_max.size else None
        warnings = [w for w in (few_heldout_warning(thr_image, cal.holdout),) if w]
        for w in warnings:
            log.warning("%s", w)
        times["thresholds"] = time.perf_counter() - t0

        # --- escape rates at that threshold: synthetic defects in the held-out images, --defects
        t0 = time.perf_counter()
        detectability = _detectability(
            _image_scorer(head_engine or engine, pre, scorer, (height, width)),
            [golden.images[i] for i in hold_idx], thr_image.value, settings, defects_dir, bar)
        if head_engine is not None:
            head_engine.close()
            head_engine = None
        times["detectability"] = time.perf_counter() - t0
        if evaluate_only:
            engine.close()
            return CalibrationResult(
                bundle_dir=Path(out_dir) if out_dir else Path(), bundle_id="", images_used=len(golden.images),
                images_skipped=golden.skipped, holdout_names=[golden.names[i] for i in hold_idx],
                holdout_scores=held_scores, holdout_map_maxima=held_max, holdout_maps=None, holdout_images=[],
                image_threshold=thr_image, pixel_threshold=thr_pixel, bank_size=0, manifest=None,
                stage_seconds=times, detectability=detectability, warnings=warnings)

        if cal.refit_on_all:
            t0 = time.perf_counter()
            params, arrays = _fit(fitter, feats, bar, "fitting (all golden images)")
            params = {**params, **search}
            times["fit_all"] = time.perf_counter() - t0

        # --- bundle
        t0 = time.perf_counter()
        output_names = [OUTPUT_NAME]
        if "head" in params:  # the final head goes into the network the daemon runs
            if cal.refit_on_all:  # else the held-out step's export is this very network
                head_export = _export_with_head(description, params, arrays, (height, width), workdir)
            onnx_path, description = head_export
            output_names = [params["output_name"]]
        manifest = {
            "preprocess": pspec.to_json(),
            "network": description,
            "engine": {"onnx": onnx_path.name, "input_name": INPUT_NAME, "input_shape": [3, height, width],
                       "output_names": output_names, "calibrated_engine": engine.kind,
                       "calibrated_precision": engine.precision},
            "scorer": {"type": settings.scorer.type, "params": params},
            "thresholds": {"image": thr_image.value, "pixel": thr_pixel.value if thr_pixel else None,
                           "image_rule": thr_image.to_json(), "pixel_rule": thr_pixel.to_json() if thr_pixel else None},
            "golden": {"folder": str(golden_dir), "images": len(golden.images), "skipped": [n for n, _ in golden.skipped],
                       "sha256": golden.sha256, "holdout": len(hold_idx), "refit_on_all": cal.refit_on_all,
                       "seed": cal.seed, "augmented_copies": len(golden.images) - originals},
            "detectability": detectability.to_json() if detectability is not None else None,
            "auto": auto_evidence,
            "metrics": {"heldout_scores": [round(float(s), 6) for s in held_scores],
                        "heldout_map_maxima": [round(float(s), 6) for s in held_max],
                        "seconds": {k: round(v, 3) for k, v in times.items()}},
            "warnings": warnings,
        }
        engine.close()
        if reference is not None:
            arrays = {**arrays, ALIGN_REFERENCE: reference}
        written = write_bundle(out_dir, manifest, arrays, onnx_path)
        times["write"] = time.perf_counter() - t0
    finally:
        if head_engine is not None:  # calibration failed between the held-out scores and the escape rates
            head_engine.close()
        shutil.rmtree(workdir, ignore_errors=True)  # also when calibration fails
    bank = arrays.get("memory_bank")
    return CalibrationResult(
        bundle_dir=Path(out_dir), bundle_id=written.bundle_id, images_used=len(golden.images), images_skipped=golden.skipped,
        augmented_copies=len(golden.images) - originals,
        holdout_names=[golden.names[i] for i in hold_idx], holdout_scores=held_scores, holdout_map_maxima=held_max,
        holdout_maps=held_maps, holdout_images=[golden.images[i] for i in hold_idx],
        image_threshold=thr_image, pixel_threshold=thr_pixel, bank_size=0 if bank is None else len(bank),
        stage_seconds=times, manifest=written, warnings=warnings, detectability=detectability,
        geometry_notes=list(geometry.notes),
    )


def _threshold(scores: np.ndarray, cal) -> Threshold:
    """calibration.threshold.rule applied to held-out scores (calibration/thresholds.py)."""
    if cal.threshold.rule == "budget":
        return budget_threshold(scores, cal.false_reject_budget)
    return quantile_margin_threshold(scores, cal.threshold.quantile, cal.threshold.margin)


def _image_scorer(engine, pre: Preprocessor, scorer, input_hw: tuple[int, int]):
    """images -> image scores along the held-out images' path (this engine, preprocessing and
    scorer). A frame the preprocessor refuses (it does not register to the golden reference)
    scores +inf: the daemon records an error for it, never a pass."""
    def score(images: list) -> np.ndarray:
        scores = np.full(len(images), np.inf)
        usable = []
        for k, image in enumerate(images):
            try:
                pre.prepare(image)
            except FrameError:
                continue
            usable.append(k)
        if usable:
            outputs = run_images(engine, pre, [images[k] for k in usable], batch=engine.spec.max_batch)
            scores[usable] = scorer.score(outputs, input_hw).image_scores
        return scores

    return score


def _detectability(score_images, held_images: list, threshold: float, settings: Settings,
                   defects_dir: Optional[str | Path], bar: _Bar) -> Optional[Detectability]:
    """Escape rates by defect size (calibration/detectability.py); None when
    calibration.synthetic_defects is 0 and there is no defects folder."""
    cal = settings.calibration
    real = None
    if defects_dir is not None:
        found = read_golden(defects_dir, max_pixels=settings.preprocess.max_pixels)
        for _, reason in found.skipped:
            log.warning("defect image skipped: %s", reason)
        real = found.images
    if not cal.synthetic_defects and real is None:
        return None
    sizes = defect_sizes(cal.min_defect_px) if cal.synthetic_defects else []
    with bar(None, "escape rates on synthetic defects") as pb:
        result = estimate_detectability(score_images, held_images, threshold, sizes, max_images=cal.synthetic_defects,
                                        seed=cal.seed, roi=settings.preprocess.roi, real_defects=real)
        pb.update(sum(r.n for r in result.by_size.values()) + (result.real.n if result.real else 0))
    for size in result.sizes_left_out:
        log.warning("synthetic defects of %d px do not fit the %s: no escape rate for that size "
                    "(lower calibration.min_defect_px)", size, "ROI" if settings.preprocess.roi else "images")
    return result


def _fit(fitter, feats: np.ndarray, bar: _Bar, desc: str):
    pb = bar(None, desc)
    pb.unit = "step"
    with pb:
        return fitter.fit(feats, progress=pb.update, total=lambda n: setattr(pb, "total", n) or pb.refresh())
