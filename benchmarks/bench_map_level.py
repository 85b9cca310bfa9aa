"""Does removing each frame's own map *level* lift pooled pixel AUROC? (issue 12/13 follow-up to
the "pooled-pixel finding": on magnetic_tile the good test tiles are re-shots of training tiles
and score low everywhere, the defective ones are new tiles whose normal pixels score high
everywhere, so pooled over frames the maps' levels, not their shapes, decide.)

Collects the pipeline's own patch maps and work images as benchmarks/bench_map_guide.py does
(calibrate as `inspector bench` does, score every test image once), forms each map the shipped
way (upsample, sigma-4 blur, the map guide), subtracts a per-frame baseline, and pools pixel
AUROC at frame resolution exactly as the bench does (calibration/pixel_auroc.py). Image scores
are not touched.

    python benchmarks/bench_map_level.py --dataset ../shared/data/magnetic_tile

Baselines (``--levels``): none; median of the whole work-image map (``median_work``); median
over the frame's content, padding off (``median``); the 10th / 25th percentile of the content
(``p10``, ``p25``); the median of the patch map (``median_patch``, the feature grid before
upsampling); and, by name only, ``div_median`` and ``z_mad`` (the map divided by its median,
or less its median over its median absolute deviation) and ``oracle`` (less the median of the
frame's normal pixels, its mask known: a level no defect can move). ``--alphas`` scales the
baseline (1: removed whole). ``--split``: also the pooled AUROC's parts (defect pixels against the
good frames' pixels, against the defective frames' normal pixels, and within each frame, which no
per-frame level changes). All variants run on one collection (one calibration).

Finding (docs/BENCHMARKS.md, "a frame's map level"): no level helps magnetic_tile; it lowers it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_map_guide import collect, form  # noqa: E402
from calibration.pixel_auroc import BINS, FramePixelAuroc, binned_auroc  # noqa: E402
from inspector.preprocess import map_to_original  # noqa: E402
from inspector.settings import Settings, load_settings  # noqa: E402

LEVELS = ("none", "median_work", "median", "p10", "p25", "median_patch")
# not in the default list: rescalings (each frame's map divided by its level or spread) and the
# oracle (the median of the frame's *normal* pixels, the mask known: a level no defect can move)
OTHERS = ("div_median", "z_mad", "oracle")


def remove_level(level: str, alpha: float, work: np.ndarray, content: np.ndarray, f: dict) -> np.ndarray:
    """The content map less ``alpha`` x the frame's baseline ``level`` (or rescaled by it)."""
    if level == "none":
        return content
    if level == "div_median":
        return content / np.float32(np.median(content) + 1e-6)
    if level == "z_mad":
        med = np.median(content)
        return (content - np.float32(med)) / np.float32(np.median(np.abs(content - med)) + 1e-6)
    if level == "median_work":
        base = np.median(work)
    elif level == "median":
        base = np.median(content)
    elif level in ("p10", "p25"):
        base = np.percentile(content, int(level[1:]))
    elif level == "median_patch":
        base = np.median(f["patch"])
    elif level == "oracle":
        full = map_to_original(content, f["tr"])
        base = np.median(full if f["mask"] is None else full[~f["mask"]])
    else:
        raise ValueError(f"unknown level {level!r}")
    return content - np.float32(alpha * float(base))


def decompose(frames: list[tuple[np.ndarray, np.ndarray | None]]) -> tuple[float, float, float]:
    """Frame-resolution maps with their masks (None: a good frame) -> AUROC of the defect pixels
    against the good frames' pixels, against the defective frames' normal pixels, and within each
    defective frame (its defect against its own normal pixels, pooled over frames by their pairs:
    what no per-frame level can change)."""
    lo = min(float(m.min()) for m, _ in frames)
    hi = max(float(m.max()) for m, _ in frames)
    scale = BINS / (hi - lo) if hi > lo else 0.0
    pos, good, bad = (np.zeros(BINS, np.int64) for _ in range(3))
    within, pairs = 0.0, 0.0
    for m, gt in frames:
        idx = np.clip(((m.ravel() - lo) * scale).astype(np.int64), 0, BINS - 1)
        if gt is None:
            good += np.bincount(idx, minlength=BINS)
            continue
        p, n = np.bincount(idx[gt.ravel()], minlength=BINS), np.bincount(idx[~gt.ravel()], minlength=BINS)
        pos += p
        bad += n
        if n.sum():
            w = float(p.sum()) * float(n.sum())
            within += w * binned_auroc(p, n)[0]
            pairs += w
    return binned_auroc(pos, good)[0], binned_auroc(pos, bad)[0], within / pairs


def evaluate(frames, input_hw, grid, level: str, alpha: float, cells: int = 3, split: bool = False):
    """Pooled pixel AUROC as the bench pools it, per defect type, and with ``split`` the
    decomposition (``decompose``)."""
    from inspector.align import unalign_to_frame

    px, full = FramePixelAuroc(), []
    for f in frames:
        work = f.get("formed")
        if work is None:  # the shipped map: upsample, sigma 4, the guide
            work = f["formed"] = form(f, input_hw, 4.0, cells, 1e-3, "clamped")
        m = grid.content(work)
        if f["align"] is not None:
            m = unalign_to_frame(m, f["tr"])
        m = remove_level(level, alpha, work, m, f)
        px.add(f["kind"] if f["mask"] is not None else "good", m, f["tr"], f["mask"])
        if split:
            full.append((map_to_original(m, f["tr"]), f["mask"]))
    kinds = sorted({f["kind"] for f in frames} - {"good"})
    return px.result().auroc, {k: px.result({k}).auroc for k in kinds}, decompose(full) if split else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--alphas", default="1")
    ap.add_argument("--split", action="store_true", help="also the decomposition of the pooled AUROC")
    args = ap.parse_args()
    settings = load_settings(args.config) if args.config else Settings()
    frames, input_hw, grid = collect(args.dataset, settings)
    print(f"{args.dataset.name}: {len(frames)} test frames with usable masks or good, work {input_hw}")
    for level in args.levels.split(","):
        for alpha in [1.0] if level in ("none",) + OTHERS else (float(a) for a in args.alphas.split(",")):
            auc, per, parts = evaluate(frames, input_hw, grid, level, alpha, split=args.split)
            split = "" if parts is None else " | defect px vs good frames {:.4f}, vs defective frames' normal px " \
                "{:.4f}, within frame {:.4f}".format(*parts)
            print(f"{level:13s} alpha {alpha:g} pooled {auc:.4f}  "
                  + " ".join(f"{k} {v:.4f}" for k, v in per.items()) + split, flush=True)


if __name__ == "__main__":
    main()
