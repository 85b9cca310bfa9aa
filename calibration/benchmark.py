"""`inspector bench`: calibrate on train/good, score test/*, report image and pixel AUROC, the
escape rate at the calibrated threshold and at stated false-reject rates, and stage timings."""
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

import numpy as np
from tqdm import tqdm

from calibration.calibrate import calibrate
from calibration.evaluation import auroc, mvtec_test_set, operating_point, percentiles, threshold_at_frr
from calibration.golden import GoldenSet, read_golden
from calibration.pixel_auroc import FramePixelAuroc, load_mask_at_frame
from calibration.summary import auto_line
from inspector.bundle import load_bundle
from inspector.decode import FrameError, read_image_file
from inspector.errors import InspectorError
from inspector.maththreads import limit_blas_threads
from inspector.runtime import build_pipeline
from inspector.settings import Settings, engine_config, load_settings
from inspector.types import Frame

STAGES = ("decode", "preprocess", "inference", "scoring", "judge", "total")
# false-reject rates (shares of the test good images) at which the escape rate is reported
FRR_TARGETS = (0.005, 0.01, 0.02)


def _settings(config: Optional[Path], engine_type: Optional[str]) -> Settings:
    settings = load_settings(config) if config else Settings()
    if engine_type and engine_type != settings.engine.type:
        settings = settings.model_copy(update={"engine": engine_config(type=engine_type, max_batch=settings.engine.max_batch)})
    return settings


def _round(x: Optional[float]) -> Optional[float]:
    """4 decimals; None for a metric that could not be computed (NaN: a class missing)."""
    return None if x is None or x != x else round(float(x), 4)


def run_benchmark(dataset: Path, *, config: Optional[Path] = None, engine_type: Optional[str] = None,
                  bundle_out: Optional[Path] = None, train_limit: Optional[int] = None, augment: int = 0,
                  progress: bool = True, auto: bool = False) -> dict:
    """auto: calibrate as ``calibrate --auto`` does (calibration/auto.py), the comparison in the result."""
    settings = _settings(config, engine_type)
    train = dataset / "train" / "good"
    if auto and (train_limit or augment):
        raise InspectorError("bench --auto calibrates on the whole train/good folder, as calibrate --auto does: "
                             "leave out --train-limit and --augment")
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
        if auto:
            from calibration.auto import auto_calibrate

            cal, _ = auto_calibrate(settings, train, bundle_out, progress=progress)
        else:
            cal = calibrate(settings, train, bundle_out, progress=progress, golden=golden)
        fit_seconds = time.perf_counter() - t0
        bundle = load_bundle(bundle_out)
        limit_blas_threads(settings.runtime.blas_threads)  # score as the daemon does
        pipeline = build_pipeline(bundle, settings.engine)
        pipeline.engine.warmup()
        items = mvtec_test_set(dataset)
        labels, scores, kinds = [], [], []
        pixels = FramePixelAuroc()
        masks_used, masks_resized, masks_unusable = 0, [], []
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
            if v.pixel_map is None:
                continue
            if item.label == 0:
                pixels.add("good", v.pixel_map, v.transform, None)
                continue
            name = f"{item.defect}/{item.path.name}"
            gt = load_mask_at_frame(item.mask, img.shape[:2])
            if gt.problem:  # left out of pixel AUROC: its defect pixels would count as normal ones
                masks_unusable.append({"image": name, "problem": gt.problem})
                continue
            masks_used += 1
            if gt.resized:
                masks_resized.append(name)
            pixels.add(item.defect, v.pixel_map, v.transform, gt.mask)
        pipeline.engine.close()
        labels_a, scores_a, kinds_a = np.array(labels), np.array(scores, np.float64), np.array(kinds)
        good, defective = scores_a[labels_a == 0], scores_a[labels_a == 1]
        thr = bundle.image_threshold
        at_frr = [{"target_false_reject_rate": x, **operating_point(good, defective, threshold_at_frr(good, x))}
                  for x in FRR_TARGETS] if good.size else []
        thr_1pct = next((op["threshold"] for op in at_frr if op["target_false_reject_rate"] == 0.01), None)
        per_defect = {}
        for kind in sorted(set(kinds) - {"good"}):
            sel = (kinds_a == "good") | (kinds_a == kind)
            px = pixels.result({kind})
            per_defect[kind] = {
                "images": int((kinds_a == kind).sum()),
                "image_auroc": _round(auroc(labels_a[sel], scores_a[sel])),
                "pixel_auroc": _round(px.auroc),
                "escape_rate_at_threshold": operating_point(good, scores_a[kinds_a == kind], thr)["escape_rate"],
                "escape_rate_at_1pct_frr": operating_point(good, scores_a[kinds_a == kind], thr_1pct)["escape_rate"]
                if thr_1pct is not None else None,
            }
        px = pixels.result()
        result = {
            "dataset": str(dataset),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {platform.processor() or ''} cpus={__import__('os').cpu_count()}".strip(),
            "backbone": bundle.manifest.network.backbone,
            "input": bundle.preprocess.describe(),
            "align_auto": bundle.preprocess.align_auto,  # preprocess.align auto's decision (pose normalisation)
            "auto": bundle.manifest.auto,  # bench --auto: the candidates compared and the one chosen
            "scorer": bundle.scorer_type,
            "scorer_params": _brief(bundle.scorer_params),
            "engine": f"{pipeline.engine.kind} {pipeline.engine.precision}",
            "train_images": cal.images_used,
            "augmented_copies": cal.augmented_copies,
            "test_images": len(labels),
            "test_errors": errors,
            "image_auroc": _round(auroc(labels_a, scores_a)),
            "pixel_auroc": _round(px.auroc),
            "pixel_auroc_detail": {"resolution": "frame", "method": f"rank-sum over {pixels.bins} score bins",
                                   "error_bound": px.error_bound, "defect_pixels": px.defect_pixels,
                                   "pixels": px.pixels},
            "masks": {"used": masks_used, "resized": masks_resized, "unusable": masks_unusable},
            "masks_unusable": len(masks_unusable),
            "per_defect": per_defect,
            "per_defect_image_auroc": {k: d["image_auroc"] for k, d in per_defect.items()},
            "per_defect_pixel_auroc": {k: d["pixel_auroc"] for k, d in per_defect.items() if d["pixel_auroc"] is not None},
            "threshold": thr,
            "at_threshold": operating_point(good, defective, thr),
            "at_false_reject_rate": at_frr,
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


def _f(x: Optional[float], digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _pct(share: float) -> str:
    return f"{share * 100:g}%"


def _counts(op: dict) -> str:
    return (f"rejects {op['false_rejects']}/{op['good_images']} good, "
            f"escapes {op['escapes']}/{op['defective_images']} defective")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return [fmt(header)] + [fmt(r) for r in rows]


def _unusable_masks(unusable: list[dict], show: int = 5) -> str:
    """The first few unusable masks by name (the JSON lists them all)."""
    if not unusable:
        return ""
    names = ", ".join(f"{m['image']} ({m['problem']})" for m in unusable[:show])
    more = f" and {len(unusable) - show} more (all in the JSON)" if len(unusable) > show else ""
    return f", {len(unusable)} unusable (left out of pixel AUROC): {names}{more}"


def format_result(r: dict) -> str:
    """The summary `inspector bench` prints: one table row with the operating point, the same per
    defect type, then the details (thresholds, masks it could not use, model, timings)."""
    at, ops = r["at_threshold"], r["at_false_reject_rate"]
    escape = lambda op: f"{_f(op['escape_rate'], 3)} ({_f(op['false_reject_rate'], 3)})"
    header = ["dataset", "image AUROC", "pixel AUROC", "escape@thr (FRR)"] + \
        [f"escape@{_pct(op['target_false_reject_rate'])} (FRR)" for op in ops] + \
        ["masks unusable", "fit s", "ms/frame"]
    row = [Path(r["dataset"]).name, _f(r["image_auroc"]), _f(r["pixel_auroc"]), escape(at)] + \
        [escape(op) for op in ops] + \
        [str(r["masks_unusable"]), f"{r['fit_seconds']:.1f}", f"{r['per_image_ms']['total']['median']:.1f}"]
    lines = _table(header, [row])
    lines += ["escape: share of defective test images passed (score <= threshold); @thr at the calibrated threshold,",
              "@x% at the smallest threshold rejecting at most x% of the test good images; (FRR) the rate reached"]
    per = r["per_defect"]
    if per:
        lines.append("")
        lines += _table(["defect type", "images", "image AUROC", "pixel AUROC", "escape @thr", "escape @1% FRR"],
                        [[k, str(d["images"]), _f(d["image_auroc"]), _f(d["pixel_auroc"]),
                          _f(d["escape_rate_at_threshold"], 3), _f(d["escape_rate_at_1pct_frr"], 3)]
                         for k, d in per.items()])
    px = r["pixel_auroc_detail"]
    lines += [
        "",
        f"dataset       {r['dataset']}  ({r['train_images']} train, {r['test_images']} test images: "
        f"{at['good_images']} good, {at['defective_images']} defective)",
        f"model         {r['backbone']} {r['input']}, {r['scorer']}, engine {r['engine']}"
        + _pose_note(r["scorer_params"]) + _key_note(r["scorer_params"])
        + (f", bank {r['bank_size']}" if r["bank_size"] else ""),
        *([f"pose          {r['align_auto']['reason']}"] if r.get("align_auto") else []),
        *([auto_line(r["auto"])] if r.get("auto") else []),
        f"thresholds    calibrated {r['threshold']:.4f} ({_counts(at)})"
        + "".join(f"; {_pct(op['target_false_reject_rate'])} FRR {op['threshold']:.4f} ({_counts(op)})" for op in ops),
        f"pixel AUROC   at frame resolution, {px['defect_pixels']} defect of {px['pixels']} pixels"
        + (f", binned (error < {px['error_bound']:.1e})" if px["error_bound"] is not None else ""),
        f"masks         {r['masks']['used']} used" + (f", {len(r['masks']['resized'])} resized to the frame"
                                                       if r["masks"]["resized"] else "")
        + _unusable_masks(r["masks"]["unusable"]),
        f"fit           {r['fit_seconds']:.1f}s (" + ", ".join(f"{k} {v}s" for k, v in r["calibration_stage_seconds"].items()) + ")",
        "per image ms  " + "  ".join(f"{s} {v['median']:.1f}/{v['p95']:.1f}" for s, v in r["per_image_ms"].items()) + "   (median/p95)",
    ]
    if r["test_errors"]:
        lines.append(f"errors        {len(r['test_errors'])}: {r['test_errors'][:3]}")
    return "\n".join(lines)


def _brief(params: dict) -> dict:
    """A method's params without their lists (bank shapes, channel picks) but for the aligned map's
    variant key (four cells): what the JSON reports."""
    return {k: _brief(v) if isinstance(v, dict) else v for k, v in params.items()
            if not isinstance(v, list) or k == "key_cells"}


def _pose_note(params: dict) -> str:
    """'; aligned map on (twin ratio 0.785)' when the fixed-pose rule decided (global context)."""
    decision = params.get("aligned_auto")
    if not isinstance(decision, dict):
        return ""
    ratio = decision.get("twin_ratio")
    return (f"; aligned map {'on' if decision.get('enabled') else 'off'} by the fixed-pose rule"
            + (f" (twin ratio {ratio})" if ratio is not None else f" ({decision.get('images')} golden images)"))


def _key_note(params: dict) -> str:
    """'; the map's references picked by the variant key (cells y 23-29, x 10-14)' when it has one."""
    key = (params.get("aligned") or {}).get("key_cells")
    return f"; the map's references picked by the variant key (cells y {key[0]}-{key[1] - 1}, x {key[2]}-{key[3] - 1})" \
        if key else ""
