"""What `inspector calibrate` prints and the report.html it writes."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from calibration.calibrate import CalibrationResult
from calibration.detectability import Detectability
from calibration.golden import read_golden
from calibration.report import CalibrationReportData, write_calibration_report
from calibration.thresholds import Threshold
from inspector.manifest import BundleManifest
from inspector.heatmap import render_overlay, write_png_atomic
from inspector.align import unalign_to_frame


def _engine_line(manifest: BundleManifest) -> str:
    """Which engine precision (and kNN search) the thresholds belong to: the line must run the same."""
    e = manifest.engine
    search = getattr(manifest.scorer.params, "search", None)
    align = manifest.preprocess.align
    return (f"engine        {e.calibrated_engine} {e.calibrated_precision}"
            + (f", kNN search {search}" if search else "")
            + (f", aligned to the golden reference ({align.motion})" if align else "")
            + "  (thresholds hold at this precision only)")


def _threshold_lines(t: Threshold, held: np.ndarray) -> list[str]:
    spread = f"held-out range {held.min():.4f}..{held.max():.4f}"
    if t.rule != "budget":
        return [f"threshold     {t.value:.4f}  (Q{t.quantile:g} + {t.margin:g} x spread of {t.n} held-out scores; "
                f"{spread})",
                f"false rejects expected ~{t.expected_frr * 100:.2f}% of good parts "
                f"(normal fit {t.normal_frr * 100:.2f}%, held-out {t.empirical_frr * 100:.1f}%); at most "
                f"{t.frr_upper_95 * 100:.1f}% (95% upper bound from {t.n} held-out score{'s' if t.n != 1 else ''})"]
    if t.tail_model == "empirical":
        how = "their empirical quantile"
    elif t.value <= float(np.quantile(held, 1 - t.false_reject_budget)):
        how = f"their empirical quantile, above a {t.tail_model} fit's"
    else:
        how = f"a {t.tail_model} fit, above their empirical quantile"
    above = round(t.empirical_frr * t.n)
    return [f"threshold     {t.value:.4f}  (false-reject budget {t.false_reject_budget * 100:g}%: {how}, "
            f"{t.n} held-out scores; {spread})",
            f"false rejects expected ~{t.expected_frr * 100:.2f}% of good parts; {above} of {t.n} held-out above, "
            f"so the held-out images alone show <= {t.frr_upper_95 * 100:.1f}% (95% confidence)"]


def _detectability_line(d: Optional[Detectability]) -> Optional[str]:
    if d is None:
        return None
    return (f"escapes       {d.statement()}  (synthetic scratches, spots, missing, foreign and texture patches "
            f"in the held-out images; by kind in the report)")


def auto_line(auto: Optional[dict]) -> Optional[str]:
    if not auto:
        return None
    tried = "; ".join(f"{t['name']}{' (pose)' if t.get('pose_normalised') else ''} {t['synthetic_found'] * 100:.0f}%"
                      for t in auto["trials"])
    return f"auto          chose {auto['chosen']} (synthetic defects found: {tried})"


def _pose_words(manifest: BundleManifest) -> Optional[str]:
    """global context's ``aligned_map: {enabled: auto}``: what calibration decided, from what."""
    d = getattr(manifest.scorer.params, "aligned_auto", None)
    if d is None:
        return None
    stat = ("" if d.twin_ratio is None
            else f"twin ratio {d.twin_ratio:.3f} {'>=' if d.enabled else '<'} cut {d.cut:g}, ")
    return f"{'on' if d.enabled else 'off'} (auto: {stat}{d.images} golden images): {d.reason}"


def _key_words(manifest: BundleManifest) -> Optional[str]:
    """global context's variant key (``aligned_map.key_region``): the cells calibration put it on."""
    a = getattr(manifest.scorer.params, "aligned", None)
    if a is None or a.key_cells is None:
        return None
    y0, y1, x0, x1 = a.key_cells
    return (f"feature cells y {y0}-{y1 - 1}, x {x0}-{x1 - 1}: the map compares a frame with the golden images whose key "
            "looks most like its own (drawn in report.html)")


def _key_picture(r: CalibrationResult, pre, path: Path) -> Optional[str]:
    """A held-out golden image's work image with the variant key's box drawn, or None without a key."""
    a = getattr(r.manifest.scorer.params, "aligned", None)
    if a is None or a.key_cells is None or not r.holdout_images:
        return None
    work, _ = pre.prepare(r.holdout_images[0])
    grid = pre.grid
    rgb = np.clip(np.asarray(work)[:, :grid.content_h, :grid.content_w] * 255.0, 0, 255).astype(np.uint8)
    picture = np.ascontiguousarray(rgb.transpose(1, 2, 0)[:, :, ::-1])  # the work image as BGR
    gh, gw = r.manifest.scorer.params.grid_hw
    (y0, y1), (x0, x1) = ((round(v * grid.work_h / gh) for v in a.key_cells[:2]),
                          (round(v * grid.work_w / gw) for v in a.key_cells[2:]))
    cv2.rectangle(picture, (x0, y0), (x1 - 1, y1 - 1), (0, 0, 255), 2)
    return str(write_png_atomic(path, picture))


def _geometry_lines(r: CalibrationResult) -> list[str]:
    """The geometry calibration chose, the smallest defect it resolves, and what a frame costs
    in the engine (per frame and per megapixel of work image: cost grows with pixels)."""
    from inspector.preprocess import PreprocessSpec

    spec = PreprocessSpec.from_json(r.manifest.preprocess.model_dump(mode="json"))
    line = f"geometry      {spec.describe()}"
    if spec.min_defect_px is not None:
        line += f"; smallest defect filling a feature cell ~{spec.min_defect_px:.0f} frame px"
    lines = [line]
    if spec.align_auto:
        lines.append(f"pose          {spec.align_auto['reason']}")
    seconds = r.stage_seconds.get("features")
    if seconds and r.images_used:
        grid = spec.grid
        ms = seconds * 1000.0 / r.images_used
        lines.append(f"cost          {ms:.1f} ms per frame at calibration, {ms / (grid.work_w * grid.work_h / 1e6):.1f} ms "
                     f"per megapixel of work image ({grid.n_tiles} network input{'s' if grid.tiled else ''} a frame)")
    lines += [f"geometry note {n}" for n in r.geometry_notes]
    return lines


def print_summary(r: CalibrationResult, report: Optional[Path], out=sys.stdout) -> None:
    ti, tp = r.image_threshold, r.pixel_threshold
    pose, key = _pose_words(r.manifest), _key_words(r.manifest)
    lines = [
        f"bundle        {r.bundle_dir}  (id {r.bundle_id})",
        f"images        {r.images_used} used, {len(r.images_skipped)} skipped, {len(r.holdout_names)} held out"
        + (f" ({r.images_used - r.augmented_copies} originals + {r.augmented_copies} augmented copies)"
           if r.augmented_copies else ""),
        f"memory bank   {r.bank_size} patches" if r.bank_size else None,
        _engine_line(r.manifest),
        *_geometry_lines(r),
        *_threshold_lines(ti, r.holdout_scores),
        f"pixel thresh  {tp.value:.4f}" if tp else None,
        _detectability_line(r.detectability),
        auto_line(r.manifest.auto),
        f"aligned map   {pose}" if pose else None,
        f"variant key   {key}" if key else None,
        "time          " + ", ".join(f"{k} {v:.1f}s" for k, v in r.stage_seconds.items()),
    ]
    for name, reason in r.images_skipped:
        lines.append(f"skipped       {reason}")
    for warning in r.warnings:
        lines.append(f"warning       {warning}")
    if report:
        lines.append(f"report        {report}")
    print("\n".join(line for line in lines if line), file=out)


def write_report(r: CalibrationResult, settings, defects_dir: Optional[Path]) -> Path:
    """report.html next to the bundle: histogram + threshold, near-threshold heatmaps, times."""
    from inspector.bundle import load_bundle

    bundle = load_bundle(r.bundle_dir)
    pre = bundle.preprocessor()
    pics = r.bundle_dir / "report"
    near = []
    if r.holdout_maps is not None and len(r.holdout_names):
        order = np.argsort(np.abs(r.holdout_scores - r.image_threshold.value))[:6]
        for i in order:
            name = r.holdout_names[i]
            img = r.holdout_images[i]
            _, tr = pre.prepare(img)
            held_map = r.holdout_maps[i] if tr.align is None else unalign_to_frame(r.holdout_maps[i], tr)
            ov = render_overlay(img, held_map, tr, bundle.pixel_threshold or 1.0,
                                label=f"{name}  {r.holdout_scores[i]:.3f}")
            path = write_png_atomic(pics / f"near-{len(near)}.png", ov)
            near.append((name, float(r.holdout_scores[i]), str(path)))
    defect_scores = None
    if defects_dir:
        defect_scores = score_folder(bundle, settings, defects_dir)
    pose, key = _pose_words(r.manifest), _key_words(r.manifest)
    data = CalibrationReportData(
        heldout_scores=[float(s) for s in r.holdout_scores],
        threshold=r.image_threshold.value,
        pixel_threshold=r.pixel_threshold.value if r.pixel_threshold else None,
        expected_false_reject_rate=r.image_threshold.expected_frr,
        false_reject_upper_bound=r.image_threshold.frr_upper_95,
        false_reject_budget=r.image_threshold.false_reject_budget,
        detectability=r.detectability.to_json() if r.detectability is not None else None,
        auto=r.manifest.auto,
        warnings=list(r.warnings),
        defect_scores=defect_scores,
        near_threshold=near,
        key_picture=_key_picture(r, pre, pics / "key.png"),
        stage_times=r.stage_seconds,
        bundle_id=r.bundle_id,
        summary={"images used": str(r.images_used), "skipped": str(len(r.images_skipped)),
                 "held out": str(len(r.holdout_names)), "memory bank": str(r.bank_size),
                 "backbone": r.manifest.network.backbone,
                 "input": _input_words(r.manifest.preprocess.model_dump(mode="json")),
                 "scorer": r.manifest.scorer.type,
                 **({"aligned map": pose} if pose else {}),
                 **({"variant key": key} if key else {}),
                 **({"pose normalisation": r.manifest.preprocess.align_auto.reason}
                    if r.manifest.preprocess.align_auto else {})},
    )
    out = r.bundle_dir / "report.html"
    write_calibration_report(out, data)
    return out


def _input_words(pre: dict) -> str:
    from inspector.preprocess import PreprocessSpec

    return PreprocessSpec.from_json(pre).describe()


def score_folder(bundle, settings, folder: Path) -> list[float]:
    """Image scores of every readable image in ``folder`` with the bundle's pipeline."""
    from inspector.runtime import build_pipeline

    imgs = read_golden(folder, max_pixels=settings.preprocess.max_pixels)
    pipeline = build_pipeline(bundle, settings.engine)
    scores = []
    from inspector.types import Frame
    from datetime import datetime, timezone

    for name, img in zip(imgs.names, imgs.images):
        v = pipeline.inspect([Frame(id=name, source="calibrate", captured_at=datetime.now(timezone.utc), image=img)])[0]
        if v.score is not None:
            scores.append(v.score)
    pipeline.engine.close()
    return scores
