"""Patch features of a dataset, extracted once and saved, for method research (issue 13).

Trying a new scorer on the same features should not re-run the backbone each time on these two
cores. This writes one npz per dataset and geometry with the features exactly as calibration
sees them (same preprocessing, tiling, stitching, engine), plus the test labels and the masks at
the work image:

    python benchmarks/feature_cache.py --dataset ../shared/data/loco_juice_bottle --size 256x256 \
        --out /tmp/featcache/loco_256.npz
    python benchmarks/feature_cache.py --dataset ../shared/data/mvtec_bottle --out /tmp/featcache/bottle_auto.npz

A synthetic "part that turns / moves" golden set (the fixed-pose research, benchmarks/bench_pose_rule.py):
each golden image rotated about its centre by a seeded random angle in +-ROTATE degrees and
shifted by up to +-SHIFT of its size (the uncovered border repeats the edge pixels), train only:

    python benchmarks/feature_cache.py --dataset ../shared/data/mvtec_bottle --size 256x256 \
        --train-limit 60 --rotate 180 --train-only --out /tmp/featcache/bottle_rot_256.npz

Arrays: train float16 [N, D, h, w] (train/good, first --train-limit), test float16 [M, D, h, w],
labels int8 [M], kinds str [M], masks uint8 [M, H, W] (the work image, padding included; 255 =
defect; all zero for good or maskless images), has_mask bool [M], content_hw int [2] (the frame
content inside the work image, top-left aligned), work_hw int [2].
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import mvtec_test_set  # noqa: E402
from calibration.features import (INPUT_NAME, OUTPUT_NAME, export_feature_network, extract_features,  # noqa: E402
                                  network_description)
from calibration.geometry import choose_geometry  # noqa: E402
from calibration.golden import read_golden  # noqa: E402
from engines.base import EngineSpec  # noqa: E402
from engines.registry import build_engine  # noqa: E402
from inspector.decode import read_image_file  # noqa: E402
from inspector.preprocess import Preprocessor  # noqa: E402
from inspector.settings import Settings  # noqa: E402


def moved(images: list, rotate: float, shift: float, seed: int = 0) -> list:
    """Each image turned about its centre by a seeded uniform angle in +-rotate degrees and shifted
    by up to +-shift of its size; the uncovered border repeats the edge pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for im in images:
        h, w = im.shape[:2]
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), float(rng.uniform(-rotate, rotate)), 1.0)
        m[:, 2] += rng.uniform(-shift, shift, 2) * (w, h)
        out.append(cv2.warpAffine(im, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", default="auto", help="auto (the default geometry) or WxH, e.g. 256x256")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--engine", default="openvino")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--rotate", type=float, default=0.0, help="turn each golden image by up to +-this many degrees")
    ap.add_argument("--shift", type=float, default=0.0,
                    help="shift each golden image by up to +-this share of its size")
    ap.add_argument("--train-only", action="store_true", help="no test images (test arrays empty)")
    args = ap.parse_args()

    raw = {"engine": {"type": args.engine, "precision": args.precision}}
    if args.size != "auto":
        w, h = (int(v) for v in args.size.lower().split("x"))
        raw["preprocess"] = {"size": [w, h]}
    settings = Settings.model_validate(raw)
    golden = read_golden(args.dataset / "train" / "good", max_pixels=settings.preprocess.max_pixels)
    if args.train_limit:
        golden = golden.first(args.train_limit)
    if args.rotate or args.shift:
        golden.images[:] = moved(golden.images, args.rotate, args.shift)
    geometry = choose_geometry(settings.preprocess, settings.calibration.min_defect_px,
                               [im.shape for im in golden.images])
    pre = Preprocessor(geometry.spec)
    desc = network_description(settings.backbone)
    hw = (geometry.spec.height, geometry.spec.width)
    with tempfile.TemporaryDirectory() as tmp:
        onnx, dim = export_feature_network(desc, hw, Path(tmp) / "backbone.onnx")
        desc["feature_dim"] = dim
        engine = build_engine(settings.engine, EngineSpec(str(onnx), INPUT_NAME, (3, *hw), (OUTPUT_NAME,),
                                                          network=desc))
        try:
            train = extract_features(engine, pre, golden.images, batch=engine.spec.max_batch)
            items = [] if args.train_only else mvtec_test_set(args.dataset)
            images = [read_image_file(str(it.path), max_pixels=settings.preprocess.max_pixels) for it in items]
            test = (extract_features(engine, pre, images, batch=engine.spec.max_batch) if images
                    else np.zeros((0,) + train.shape[1:], np.float32))
        finally:
            engine.close()
    work_h, work_w = pre.grid.work_hw
    masks = np.zeros((len(items), work_h, work_w), np.uint8)
    has_mask = np.zeros(len(items), bool)
    for k, (it, im) in enumerate(zip(items, images)):
        if it.mask is None:
            continue
        m = cv2.imread(str(it.mask), cv2.IMREAD_GRAYSCALE)
        if m is None:
            continue
        m = cv2.resize(m, (im.shape[1], im.shape[0]), interpolation=cv2.INTER_NEAREST)
        resized, _ = pre.crop_resize(cv2.cvtColor(m, cv2.COLOR_GRAY2BGR) if im.ndim == 3 else m)
        resized = resized if resized.ndim == 2 else resized[..., 0]
        masks[k, :resized.shape[0], :resized.shape[1]] = np.where(resized > 0, 255, 0).astype(np.uint8)
        has_mask[k] = True
    content = pre.grid.content(np.ones((1, work_h, work_w), np.float32))[0].shape
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, train=train.astype(np.float16), test=test.astype(np.float16),
             labels=np.array([it.label for it in items], np.int8), kinds=np.array([it.defect for it in items]),
             masks=masks, has_mask=has_mask, content_hw=np.array(content, np.int64),
             work_hw=np.array([work_h, work_w], np.int64))
    print(f"{args.out}: train {train.shape}, test {test.shape}, work {work_h}x{work_w}, content {content}")


if __name__ == "__main__":
    main()
