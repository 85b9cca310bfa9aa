"""`inspector bench`: calibrate on train/good, score test/*, report AUROC and stage timings."""
from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from tqdm import tqdm

from calibration.calibrate import calibrate
from calibration.evaluation import auroc, mvtec_test_set, percentiles
from calibration.golden import GoldenSet, read_golden
from inspector.bundle import load_bundle
from inspector.decode import FrameError, read_image_file
from inspector.maththreads import limit_blas_threads
from inspector.runtime import build_pipeline
from inspector.settings import Settings, engine_config, load_settings
from inspector.types import Frame

STAGES = ("decode", "preprocess", "inference", "scoring", "judge", "total")


def _settings(config: Optional[Path], engine_type: Optional[str]) -> Settings:
    settings = load_settings(config) if config else Settings()
    if engine_type and engine_type != settings.engine.type:
        settings = settings.model_copy(update={"engine": engine_config(type=engine_type, max_batch=settings.engine.max_batch)})
    return settings


def _gt_at_input(mask_path: Optional[Path], shape_hw: tuple[int, int], tr, input_hw: tuple[int, int]) -> np.ndarray:
    """Ground truth (bool) cropped to the ROI and resized to the map's size (the work image)."""
    H, W = input_hw
    if mask_path is None:
        return np.zeros((H, W), bool)
    m = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        return np.zeros((H, W), bool)
    if m.shape != shape_hw:
        m = cv2.resize(m, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_NEAREST)
    m = m[tr.roi_y:tr.roi_y + tr.roi_h, tr.roi_x:tr.roi_x + tr.roi_w]
    return cv2.resize(m, (W, H), interpolation=cv2.INTER_NEAREST) > 0


def run_benchmark(dataset: Path, *, config: Optional[Path] = None, engine_type: Optional[str] = None,
                  bundle_out: Optional[Path] = None, train_limit: Optional[int] = None, augment: int = 0,
                  progress: bool = True) -> dict:
    settings = _settings(config, engine_type)
    train = dataset / "train" / "good"
    golden: Optional[GoldenSet] = None
    if train_limit or augment:
        golden = read_golden(train, max_pixels=settings.preprocess.max_pixels)
        if train_limit:
            golden = golden.first(train_limit)
        if augment:
            from calibration.augment import augment_golden

            golden = augment_golden(golden, augment, settings.calibration.seed)
    tmp = None
    if bundle_out is None:
        tmp = Path(tempfile.mkdtemp(prefix="inspector-bench-"))
        bundle_out = tmp / "bundle"
    try:
        t0 = time.perf_counter()
        cal = calibrate(settings, train, bundle_out, progress=progress, golden=golden)
        fit_seconds = time.perf_counter() - t0
        bundle = load_bundle(bundle_out)
        limit_blas_threads(settings.runtime.blas_threads)  # score as the daemon does
        pipeline = build_pipeline(bundle, settings.engine)
        pipeline.engine.warmup()
        items = mvtec_test_set(dataset)
        labels, scores, kinds = [], [], []
        pix_scores, pix_labels, pix_kinds = [], [], []
        timings: dict[str, list[float]] = {s: [] for s in STAGES}
        errors = []
        for item in tqdm(items, desc="scoring test images", unit="img", disable=not progress):
            t = time.perf_counter()
            try:
                img = read_image_file(str(item.path), max_pixels=settings.preprocess.max_pixels)
            except FrameError as exc:
                errors.append(str(exc))
                continue
            decode_ms = (time.perf_counter() - t) * 1000.0
            frame = Frame(id=item.path.name, source="bench", captured_at=datetime.now(timezone.utc), image=img,
                          origin_path=str(item.path), decode_ms=decode_ms)
            v = pipeline.inspect([frame])[0]
            if v.score is None:
                errors.append(v.error or "no score")
                continue
            labels.append(item.label)
            scores.append(v.score)
            kinds.append(item.defect)
            for s in STAGES:
                timings[s].append(v.timings_ms.get(s, 0.0))
            if v.pixel_map is not None and (item.mask is not None or item.label == 0):
                gt = _gt_at_input(item.mask, img.shape[:2], v.transform, v.pixel_map.shape)
                # subsample 2x2 to keep memory flat on big test sets; AUROC is unaffected in practice
                pix_scores.append(v.pixel_map[::2, ::2].ravel())
                pix_labels.append(gt[::2, ::2].ravel())
                pix_kinds.append(item.defect)
        pipeline.engine.close()
        labels_a, scores_a = np.array(labels), np.array(scores)
        per_defect = {}
        for kind in sorted(set(kinds) - {"good"}):
            sel = np.array([k in ("good", kind) for k in kinds])
            per_defect[kind] = round(auroc(labels_a[sel], scores_a[sel]), 4)
        per_defect_pixel = {}
        for kind in sorted(set(pix_kinds) - {"good"}):
            sel = [i for i, k in enumerate(pix_kinds) if k in ("good", kind)]
            lab = np.concatenate([pix_labels[i] for i in sel])
            if lab.any():
                per_defect_pixel[kind] = round(auroc(lab, np.concatenate([pix_scores[i] for i in sel])), 4)
        thr = bundle.image_threshold
        pred = scores_a > thr
        result = {
            "dataset": str(dataset),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
            "backbone": bundle.manifest["network"]["backbone"],
            "input": bundle.preprocess.describe(),
            "scorer": bundle.scorer_type,
            "scorer_params": {k: v for k, v in bundle.scorer_params.items() if not isinstance(v, (list, dict))},
            "engine": f"{pipeline.engine.kind} {pipeline.engine.precision}",
            "train_images": cal.images_used,
            "augmented_copies": cal.augmented_copies,
            "test_images": len(labels),
            "test_errors": errors,
            "image_auroc": round(auroc(labels_a, scores_a), 4),
            "pixel_auroc": round(auroc(np.concatenate(pix_labels), np.concatenate(pix_scores)), 4)
            if pix_scores and any(l.any() for l in pix_labels) else None,
            "per_defect_image_auroc": per_defect,
            "per_defect_pixel_auroc": per_defect_pixel,
            "threshold": thr,
            "at_threshold": {"false_reject_rate": round(float(pred[labels_a == 0].mean()), 4) if (labels_a == 0).any() else None,
                             "escape_rate": round(float((~pred[labels_a == 1]).mean()), 4) if (labels_a == 1).any() else None},
            "fit_seconds": round(fit_seconds, 2),
            "calibration_stage_seconds": {k: round(v, 2) for k, v in cal.stage_seconds.items()},
            "bank_size": cal.bank_size,
            "per_image_ms": {s: percentiles(v) for s, v in timings.items()},
        }
        return result
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def write_json_result(path: Path, result: dict) -> None:
    """A benchmark's result as indented JSON (folders made as needed); says where on stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def format_result(r: dict) -> str:
    lines = [
        f"dataset       {r['dataset']}  ({r['train_images']} train, {r['test_images']} test images)",
        f"model         {r['backbone']} {r['input']}, {r['scorer']}, engine {r['engine']}"
        + (f", bank {r['bank_size']}" if r["bank_size"] else ""),
        f"image AUROC   {r['image_auroc']:.4f}   per defect: " + ", ".join(f"{k} {v:.3f}" for k, v in r["per_defect_image_auroc"].items()),
        (f"pixel AUROC   {r['pixel_auroc']:.4f}   per defect: "
         + ", ".join(f"{k} {v:.3f}" for k, v in r.get("per_defect_pixel_auroc", {}).items()))
        if r["pixel_auroc"] is not None else "pixel AUROC   - (no masks)",
        f"at threshold  {r['threshold']:.4f}: false rejects {r['at_threshold']['false_reject_rate']}, escapes {r['at_threshold']['escape_rate']}",
        f"fit           {r['fit_seconds']:.1f}s (" + ", ".join(f"{k} {v}s" for k, v in r["calibration_stage_seconds"].items()) + ")",
        "per image ms  " + "  ".join(f"{s} {v['median']:.1f}/{v['p95']:.1f}" for s, v in r["per_image_ms"].items()) + "   (median/p95)",
    ]
    if r["test_errors"]:
        lines.append(f"errors        {len(r['test_errors'])}: {r['test_errors'][:3]}")
    return "\n".join(lines)
