"""How the frame-resolution pixel map is formed, compared on the real pipeline's maps (issue 12/13,
sharper pixel maps): calibrate as `inspector bench` does (the default config, or --config), score
every test image once through the pipeline, keep each frame's patch map and work image, then form
the map each way and pool pixel AUROC at frame resolution exactly as the bench does
(calibration/pixel_auroc.py). The map guide's own setting is turned off for the calibration, so
the variants start from the same patch maps; the image scores are the same for every variant.

    python benchmarks/bench_map_guide.py --dataset ../shared/data/loco_juice_bottle
    python benchmarks/bench_map_guide.py --dataset ../shared/data/mvtec_bottle --sigmas 2,4,8 --cells 0,1,2,3,4

Variants: the Gaussian sigma (input pixels) before the guide; the guide's radius in feature cells
(0: none) and eps; ``--raw``: also the guided filter without the window-range clamp; ``--full``: also
without the fast filter's subsampling. Prints one row per variant: pooled pixel AUROC, per defect
type, and the map's median CPU ms per frame.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.calibrate import calibrate  # noqa: E402
from calibration.evaluation import mvtec_test_set  # noqa: E402
from calibration.pixel_auroc import FramePixelAuroc, load_mask_at_frame  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.decode import read_image_file  # noqa: E402
from inspector.guided import grey_guide, guided_filter, refine_map  # noqa: E402
from inspector.maththreads import limit_blas_threads  # noqa: E402
from inspector.methods.base import upsample_and_smooth  # noqa: E402
from inspector.runtime import build_pipeline  # noqa: E402
from inspector.settings import Settings, load_settings  # noqa: E402
from inspector.types import Frame  # noqa: E402


def collect(dataset: Path, settings: Settings) -> tuple[list[dict], tuple[int, int], object]:
    """Calibrate, then every test image's patch map, grey work image, transform and mask; the
    input size and the tile grid."""
    if settings.scorer.method != "global_context":
        raise SystemExit("bench_map_guide: the map guide is global_context's (the default scorer)")
    gc = settings.scorer.global_context.model_copy(update={"map_guide_cells": 0})
    settings = settings.model_copy(update={"scorer": settings.scorer.model_copy(update={"global_context": gc})})
    tmp = tempfile.TemporaryDirectory(prefix="bench-map-guide-")  # the bundle's files live until the end
    calibrate(settings, dataset / "train" / "good", Path(tmp.name) / "b", progress=False)
    bundle = load_bundle(Path(tmp.name) / "b")
    limit_blas_threads(settings.runtime.blas_threads)
    pipe = build_pipeline(bundle, settings.engine)
    pipe.engine.warmup()
    frames = []
    for item in mvtec_test_set(dataset):
        img = read_image_file(str(item.path), max_pixels=settings.preprocess.max_pixels)
        ex = pipe.extract([Frame(id=item.path.name, source="bench", captured_at=datetime.now(timezone.utc),
                                 image=img, origin_path=str(item.path))])
        if not ex.ok:
            continue
        sm = pipe.scorer.score(ex.features, pipe.input_hw)
        mask = None
        if item.label == 1:
            gt = load_mask_at_frame(item.mask, img.shape[:2])
            if gt.problem:
                continue
            mask = gt.mask
        frames.append({"name": item.path.name, "kind": item.defect, "patch": sm.patch_maps[0], "grey": grey_guide(ex.works[0]),
                       "tr": ex.transforms[0], "mask": mask, "align": ex.transforms[0].align})
    pipe.engine.close()
    tmp.cleanup()
    return frames, pipe.input_hw, pipe.grid


def form(f: dict, input_hw, sigma: float, cells: int, eps: float, how: str) -> np.ndarray:
    m = upsample_and_smooth(f["patch"][None], input_hw, sigma)[0]
    if cells > 0:
        radius = cells * (input_hw[0] // f["patch"].shape[0])
        sub = max(1, input_hw[0] // f["patch"].shape[0] // 2)
        if how == "clamped":
            m = refine_map(f["grey"], m, radius, eps, sub)
        else:
            m = guided_filter(f["grey"], m, radius, eps, sub if how == "raw" else 1)
    return m


def frame_map(f: dict, input_hw, grid, sigma: float, cells: int, eps: float, how: str) -> tuple[np.ndarray, float]:
    """The frame's map in input coordinates, unaligned where pose normalisation aligned it, and the
    CPU seconds forming it took (the unaligning not counted)."""
    from inspector.align import unalign_to_frame

    c0 = time.process_time()
    m = grid.content(form(f, input_hw, sigma, cells, eps, how))
    spent = time.process_time() - c0
    return (m if f["align"] is None else unalign_to_frame(m, f["tr"])), spent


def evaluate(frames, input_hw, grid, sigma, cells, eps, how) -> tuple[float, dict, float]:
    px, cpu = FramePixelAuroc(), []
    for f in frames:
        m, spent = frame_map(f, input_hw, grid, sigma, cells, eps, how)
        cpu.append(spent)
        px.add(f["kind"] if f["mask"] is not None else "good", m, f["tr"], f["mask"])
    kinds = sorted({f["kind"] for f in frames} - {"good"})
    return px.result().auroc, {k: px.result({k}).auroc for k in kinds}, 1000 * float(np.median(cpu))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--sigmas", default="4")
    ap.add_argument("--cells", default="0,1,2,3,4")
    ap.add_argument("--eps", default="0.001")
    ap.add_argument("--raw", action="store_true", help="also the guided filter without the range clamp")
    ap.add_argument("--full", action="store_true", help="also the guided filter at full resolution")
    args = ap.parse_args()
    settings = load_settings(args.config) if args.config else Settings()
    frames, input_hw, grid = collect(args.dataset, settings)
    hows = ["clamped"] + (["raw"] if args.raw else []) + (["full"] if args.full else [])
    print(f"{args.dataset.name}: {len(frames)} test frames with usable masks or good, work {input_hw}")
    for sigma in (float(s) for s in args.sigmas.split(",")):
        for cells in (int(c) for c in args.cells.split(",")):
            for eps in (float(e) for e in args.eps.split(",")) if cells else [0.0]:
                for how in hows if cells else ["-"]:
                    auc, per, ms = evaluate(frames, input_hw, grid, sigma, cells, eps, how)
                    print(f"sigma {sigma:g} cells {cells} eps {eps:g} {how:8s} pooled {auc:.4f}  "
                          + " ".join(f"{k} {v:.4f}" for k, v in per.items()) + f"   {ms:.2f} ms CPU", flush=True)


if __name__ == "__main__":
    main()
