"""Calibrate on an MVTec-layout dataset's train/good and score every test image.

Prints one row per dataset: image AUROC, pixel AUROC (at each frame's own resolution, against
masks at that resolution), the escape rate (defective test images scored at or below the
threshold, i.e. passed) at the calibrated threshold with the false-reject rate it gives on the
test good images, the escape rate at 0.5/1/2% false rejects (with the rate actually reached),
how many masks could not be used, fit time and ms per frame; then the same per defect type and
the details. --out writes all of it as JSON. Dataset layout: train/good, test/good,
test/<defect>, ground_truth/<defect>/<stem>_mask.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from inspector.errors import InspectorError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, type=Path, help="MVTec-layout folder")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--config", type=Path, help="YAML config (preprocess/backbone/scorer/calibration/engine)")
    p.add_argument("--engine", choices=["onnxruntime", "torch", "openvino", "tensorrt"],
                   help="override engine.type (other engine settings keep their defaults)")
    p.add_argument("--bundle-out", type=Path, help="keep the calibrated bundle here (default: a temp folder)")
    p.add_argument("--train-limit", type=int, help="use only the first N train/good images (quick runs)")
    p.add_argument("--augment", type=int, default=0, help="augmented copies per golden image (few-shot studies)")
    p.add_argument("--auto", action="store_true", help="calibrate as calibrate --auto does (methods and geometries "
                   "compared on synthetic defects) instead of the configured method")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from calibration.benchmark import format_result, run_benchmark, write_json_result

    if not (args.dataset / "train" / "good").is_dir():
        raise InspectorError(f"dataset {args.dataset}: no train/good folder; expected the MVTec AD layout")
    result = run_benchmark(args.dataset, config=args.config, engine_type=args.engine, bundle_out=args.bundle_out,
                           train_limit=args.train_limit, augment=args.augment, progress=not args.quiet,
                           auto=args.auto)
    print(format_result(result))
    if args.out:
        write_json_result(args.out, result)
    return 0
