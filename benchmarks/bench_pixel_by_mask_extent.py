"""Pooled pixel AUROC split by how much of its frame a defect's mask covers (issue 13, loco pixel bar).

On loco_juice_bottle most frames' masks mark a label, a cap or a band of fill; a few mark the whole
fill of the bottle (an empty bottle; juice whose colour does not match its label's fruit). Pooled
pixel AUROC counts a frame by its defect pixels, so those few frames hold about half of them. This
calibrates as `inspector bench` does (the default config, or --config), forms every test frame's map
as the daemon does (the map guide included), and pools pixel AUROC at frame resolution exactly as
the bench does (calibration/pixel_auroc.py), over all frames and again with the defective frames
split at ``--cut`` (the mask's share of its frame): good frames + the small-mask frames, good frames
+ the large-mask ones. For each large-mask frame it prints the share of good frames' pixels that
its defect pixels outrank (1: every defect pixel above every good pixel).

    python benchmarks/bench_pixel_by_mask_extent.py --dataset ../shared/data/loco_juice_bottle [--cut 0.2]

The frames are the test set's own; which is which is read from the mask alone, no file list.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_map_guide import collect, frame_map  # noqa: E402
from calibration.pixel_auroc import FramePixelAuroc  # noqa: E402
from inspector.preprocess import map_to_original  # noqa: E402
from inspector.settings import Settings, load_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--cut", type=float, default=0.2, help="a mask covering more than this share of its frame is large")
    args = ap.parse_args()
    settings = load_settings(args.config) if args.config else Settings()
    g = settings.scorer.global_context
    frames, input_hw, grid = collect(args.dataset, settings)
    px, maps = FramePixelAuroc(), []
    for f in frames:
        m, _ = frame_map(f, input_hw, grid, 4.0, g.map_guide_cells, g.map_guide_eps, "clamped")  # as the daemon forms it
        group = "good" if f["mask"] is None else ("large" if f["mask"].mean() > args.cut else "small")
        px.add(group, m, f["tr"], f["mask"])
        maps.append((group, m, f))
    defect_px = {k: sum(int(f["mask"].sum()) for grp, _, f in maps if grp == k) for k in ("small", "large")}
    share = defect_px["large"] / max(1, sum(defect_px.values()))
    n = {k: sum(grp == k for grp, _, _ in maps) for k in ("good", "small", "large")}
    print(f"{args.dataset.name}: {n['good']} good, {n['small']} small-mask and {n['large']} large-mask frames "
          f"(mask > {args.cut:.0%} of the frame; {share:.0%} of the defect pixels)")
    print(f"  pooled, all frames           {px.result().auroc:.4f}")
    print(f"  good + small-mask frames     {px.result({'small'}).auroc:.4f}")
    print(f"  good + large-mask frames     {px.result({'large'}).auroc:.4f}")
    good = np.sort(np.concatenate([map_to_original(m, f["tr"]).ravel() for grp, m, f in maps if grp == "good"]))
    print("  large-mask frames: share of good frames' pixels their defect pixels outrank (mean), mask share")
    for grp, m, f in maps:
        if grp == "large":
            d = map_to_original(m, f["tr"])[f["mask"]]
            print(f"    {f['name']:<28} {np.searchsorted(good, d).mean() / len(good):.3f}  {f['mask'].mean():.2f}")


if __name__ == "__main__":
    main()
