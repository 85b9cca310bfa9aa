"""Golden-sample calibration: fit a scorer from defect-free images and set its thresholds.

1. read the golden folder (unreadable files listed and skipped);
2. export the feature network to ONNX and extract features with the configured engine (so the
   thresholds belong to the engine and precision the line will run);
3. hold out a share of the images, fit on the rest, score the held-out ones;
4. image threshold = Q_q + margin * (Q_q - median) of held-out image scores; pixel threshold the
   same rule on the maxima of the held-out smoothed maps (so a good part rarely shows a region);
5. optionally refit on all images; write the bundle (+ report.html).
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm import tqdm

from calibration.bundle import write_bundle
from calibration.features import INPUT_NAME, OUTPUT_NAME, export_feature_network, extract_features, network_description
from calibration.fitters.registry import build_fitter
from calibration.golden import GoldenSet, read_golden
from calibration.thresholds import Threshold, quantile_margin_threshold
from engines.base import EngineSpec
from engines.registry import build_engine
from inspector.errors import InspectorError
from inspector.preprocess import Preprocessor, PreprocessSpec
from inspector.scoring.registry import scorer_from_bundle
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
    image_threshold: Threshold
    pixel_threshold: Threshold
    bank_size: int
    stage_seconds: dict[str, float] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)


class _Bar:
    """tqdm bars on stderr, or nothing (tests, --quiet)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, total: Optional[int], desc: str):
        # on a terminal, a live bar; in a log (journald, CI), a line every few seconds
        interval = 0.1 if sys.stderr.isatty() else 5.0
        return tqdm(total=total, desc=desc, unit="img", disable=not self.enabled, leave=True, dynamic_ncols=True,
                    mininterval=interval)


def _split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices); at least 1 held out and 1 fitted."""
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(1, int(round(n * share))), n - 1)
    return np.sort(order[k:]), np.sort(order[:k])


def calibrate(settings: Settings, golden_dir: str | Path, out_dir: str | Path, *, progress: bool = True,
              golden: Optional[GoldenSet] = None) -> CalibrationResult:
    bar = _Bar(progress)
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    golden_dir = Path(golden_dir)
    if golden is None:
        if not golden_dir.is_dir():
            raise InspectorError(f"golden folder {golden_dir}: not found; pass --golden with a folder of good-part images")
        from calibration.golden import list_images

        with bar(len(list_images(golden_dir)), "reading golden images") as pb:
            golden = read_golden(golden_dir, max_pixels=settings.preprocess.max_pixels, progress=pb.update)
    for name, reason in golden.skipped:
        log.warning("skipped %s", reason)
    cal = settings.calibration
    if len(golden.images) < cal.min_images:
        raise InspectorError(f"golden folder {golden_dir}: {len(golden.images)} readable images "
                             f"({len(golden.skipped)} skipped), need at least {cal.min_images} "
                             f"(calibration.min_images)")
    times["read"] = time.perf_counter() - t0

    # --- network and engine
    t0 = time.perf_counter()
    width, height = settings.preprocess.size
    pspec = PreprocessSpec(width, height, settings.preprocess.roi)
    pre = Preprocessor(pspec)
    description = network_description(settings.backbone)
    workdir = Path(tempfile.mkdtemp(prefix="inspector-calibrate-"))
    onnx_path, feature_dim = export_feature_network(description, (height, width), workdir / "backbone.onnx")
    description["feature_dim"] = feature_dim
    spec = EngineSpec(str(onnx_path), INPUT_NAME, (3, height, width), (OUTPUT_NAME,), 8, description)
    engine = build_engine(settings.engine, spec)
    times["export"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    with bar(len(golden.images), "extracting features") as pb:
        feats = extract_features(engine, pre, golden.images, batch=engine.spec.max_batch, progress=pb.update)
    times["features"] = time.perf_counter() - t0

    # --- fit on part, score the held-out rest
    fit_idx, hold_idx = _split(len(golden.images), cal.holdout, cal.seed)
    fitter = build_fitter(settings.scorer, seed=cal.seed)
    t0 = time.perf_counter()
    params, arrays = _fit(fitter, feats[fit_idx], bar, "fitting (held-out split)")
    times["fit_split"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scorer = scorer_from_bundle(settings.scorer.type, params, arrays)
    held = scorer.score({OUTPUT_NAME: feats[hold_idx]}, (height, width))
    held_scores = held.image_scores.astype(np.float64)
    held_max = (held.pixel_maps.reshape(len(hold_idx), -1).max(1) if held.pixel_maps is not None
                else np.array([], np.float64))
    rule = cal.threshold
    thr_image = quantile_margin_threshold(held_scores, rule.quantile, rule.margin)
    thr_pixel = quantile_margin_threshold(held_max, rule.quantile, rule.margin) if held_max.size else None
    times["thresholds"] = time.perf_counter() - t0

    if cal.refit_on_all:
        t0 = time.perf_counter()
        params, arrays = _fit(fitter, feats, bar, "fitting (all golden images)")
        times["fit_all"] = time.perf_counter() - t0

    # --- bundle
    t0 = time.perf_counter()
    manifest = {
        "preprocess": pspec.to_json(),
        "network": description,
        "engine": {"onnx": "backbone.onnx", "input_name": INPUT_NAME, "input_shape": [3, height, width],
                   "output_names": [OUTPUT_NAME], "calibrated_engine": engine.kind,
                   "calibrated_precision": engine.precision},
        "scorer": {"type": settings.scorer.type, "params": params},
        "thresholds": {"image": thr_image.value, "pixel": thr_pixel.value if thr_pixel else None,
                       "image_rule": thr_image.to_json(), "pixel_rule": thr_pixel.to_json() if thr_pixel else None},
        "golden": {"folder": str(golden_dir), "images": len(golden.images), "skipped": [n for n, _ in golden.skipped],
                   "sha256": golden.sha256, "holdout": len(hold_idx), "refit_on_all": cal.refit_on_all,
                   "seed": cal.seed},
        "metrics": {"heldout_scores": [round(float(s), 6) for s in held_scores],
                    "heldout_map_maxima": [round(float(s), 6) for s in held_max],
                    "seconds": {k: round(v, 3) for k, v in times.items()}},
    }
    engine.close()
    bundle_id = write_bundle(out_dir, manifest, arrays, onnx_path)
    times["write"] = time.perf_counter() - t0
    for f in workdir.iterdir():
        f.unlink()
    workdir.rmdir()
    bank = arrays.get("memory_bank")
    return CalibrationResult(
        bundle_dir=Path(out_dir), bundle_id=bundle_id, images_used=len(golden.images), images_skipped=golden.skipped,
        holdout_names=[golden.names[i] for i in hold_idx], holdout_scores=held_scores, holdout_map_maxima=held_max,
        holdout_maps=held.pixel_maps, image_threshold=thr_image, pixel_threshold=thr_pixel, bank_size=0 if bank is None else len(bank),
        stage_seconds=times, manifest=manifest,
    )


def _fit(fitter, feats: np.ndarray, bar: _Bar, desc: str):
    pb = bar(None, desc)
    pb.unit = "step"
    with pb:
        return fitter.fit(feats, progress=pb.update, total=lambda n: setattr(pb, "total", n) or pb.refresh())
