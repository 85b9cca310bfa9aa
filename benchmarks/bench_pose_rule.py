"""Is a line's part "fixed pose"? Candidate statistics from the golden images alone (the research
behind ``aligned_map: {enabled: auto}``), on the feature caches (benchmarks/feature_cache.py):

    python benchmarks/bench_pose_rule.py /work/featcache/{bottle,magnetic,loco,screw}_256.npz \\
        /tmp/featcache/bottle_rot_256.npz ... [--n 60] [--seeds 0,1,2] [--full]

Per cache and seed, a random subset of ``--n`` golden images (``--full``: all of them as well), on
all feature dims, k 5 neighbours by layout and +-1 cell as the aligned map (inspector/methods/aligned.py):

1. ``twin``, the layout spread (the rule's statistic, calibration/methods/pose.py twin_ratio): the
   median over images of (distance to the nearest other image by layout) / (median distance between
   two images): ~0 when every image has a near twin, ~1 when none has; ``thin``: the median nearest
   distance within random halves over that within all (~1 for scatter in many directions, 2^(1/d)
   along a d-dimensional pose path);
2. position specificity: each held-out image against its k nearest images by layout, the mean
   (``pos_mean``) and the largest (``pos_max``) patch distance within +-1 cell of the same position
   over the same anywhere in those k images (>= 1): ~1 when what matches a patch sits where it
   sits; the median over images;
3. coverage sensitivity: the golden images' aligned-map maxima against the others with half the
   set left out (each image in the left-out half) minus the same with only itself left out, in the
   latter's std: how much a new good part's aligned z rises for a golden set that covers its pose
   less well (a calibrated threshold on a turning part is only as good as the pose coverage).

``--sizes``: instead, the twin ratio's mean, std and range over 10 random subsets of 15 to 200
golden images (why the rule takes it on a fixed number of images).

Last, per cache, the rule itself on all its golden images (``rule``: pose.decide, the twin ratio
averaged over 5 seeded 60-image subsets, seeds 0, 1, 2) and its decision at the 0.48 cut.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.methods import pose  # noqa: E402
from inspector.methods import aligned  # noqa: E402
from inspector.methods import global_context as gc  # noqa: E402

K, RADIUS = 5, 1


def layout_thinning(lay: np.ndarray, seed: int, repeats: int = 5) -> float:
    """median nearest-other-image layout distance within a random half of the images / the same
    within all: ~1 when the images scatter in many directions around one layout (thinning the set
    barely moves the nearest), 2^(1/d) when they lie along a d-dimensional pose path."""
    d2 = (lay * lay).sum(1)[:, None] + (lay * lay).sum(1)[None] - 2.0 * lay @ lay.T
    d = np.sqrt(np.maximum(d2, 0.0))
    np.fill_diagonal(d, np.inf)
    full = np.median(d.min(axis=1))
    rng = np.random.default_rng(seed + 200)
    half = []
    for _ in range(repeats):
        rows = rng.permutation(len(d))[:len(d) // 2]
        half.append(np.median(d[np.ix_(rows, rows)].min(axis=1)))
    return float(np.mean(half) / full)


def free_distances(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """q [h, w, D], g [k, h, w, D] -> [h, w]: each patch's nearest patch anywhere in g."""
    h, w, d = q.shape
    qf, gf = q.reshape(-1, d), g.reshape(-1, d)
    d2 = (qf * qf).sum(1)[:, None] + (gf * gf).sum(1)[None] - 2.0 * qf @ gf.T
    return np.sqrt(np.maximum(d2.min(axis=1), 0.0)).reshape(h, w)


def position_specificity(feats: np.ndarray, lay: np.ndarray) -> tuple[float, float, float, float]:
    nbrs = aligned.nearest_images(lay, lay, K, exclude=np.arange(len(lay)))
    means, maxes, p99, frac = [], [], [], []
    for i in range(len(feats)):
        q = np.ascontiguousarray(feats[i].transpose(1, 2, 0))
        g = np.ascontiguousarray(feats[nbrs[i]].transpose(0, 2, 3, 1))
        a, f = aligned.window_distances(q, g, RADIUS), free_distances(q, g)
        means.append(a.mean() / f.mean())
        maxes.append(a.max() / f.max())
        r = a / np.maximum(f, 1e-12)
        p99.append(np.quantile(r, 0.99))
        frac.append((r > 1.05).mean())
    return float(np.median(means)), float(np.median(maxes)), float(np.median(p99)), float(np.median(frac))


def coverage_sensitivity(feats: np.ndarray, lay: np.ndarray, boxes, seed: int, repeats: int = 3) -> float:
    n = len(feats)
    loo = aligned.aligned_maps(feats, feats, lay, boxes, K, RADIUS, exclude=np.arange(n)).reshape(n, -1).max(1)
    rises = []
    for r in range(repeats):  # random halves, each left out in turn
        half = np.random.default_rng(seed + 100 + r).permutation(n) % 2 == 0
        out_half = np.empty(n)
        for side in (True, False):
            rows, keep = np.flatnonzero(half == side), np.flatnonzero(half != side)
            out_half[rows] = aligned.aligned_maps(feats[rows], feats[keep], lay[keep], boxes, K,
                                                  RADIUS).reshape(len(rows), -1).max(1)
        rises.append((out_half.mean() - loo.mean()) / loo.std(ddof=1))
    return float(np.mean(rises))


def stats(feats: np.ndarray, seed: int) -> dict:
    boxes = gc.regions(feats.shape[2:], [4])
    lay = aligned.layouts(feats, boxes).astype(np.float64)
    pos_mean, pos_max, pos_p99, pos_frac = position_specificity(feats, lay.astype(np.float32))
    return {"twin": pose.twin_ratio(lay), "thin": layout_thinning(lay, seed), "pos_mean": pos_mean,
            "pos_max": pos_max, "pos_p99": pos_p99,
            "pos_frac": pos_frac,
            "coverage": coverage_sensitivity(feats, lay.astype(np.float32), boxes, seed)}


def twin_by_size(train: np.ndarray, name: str) -> None:
    lay = aligned.layouts(train, gc.regions(train.shape[2:], [4])).astype(np.float64)
    cells = []
    for n in (15, 30, 60, 120, 200):
        if n <= len(lay):
            v = [pose.twin_ratio(lay[np.random.default_rng(s).permutation(len(lay))[:n]]) for s in range(10)]
            cells.append(f"n {n}: {np.mean(v):.3f} +-{np.std(v):.3f} [{min(v):.3f}, {max(v):.3f}]")
    print(f"{name:<22} " + " | ".join(cells), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", type=Path, nargs="+")
    ap.add_argument("--n", type=int, default=60, help="golden images per random subset")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--full", action="store_true", help="also all of each cache's golden images")
    ap.add_argument("--sizes", action="store_true", help="the twin ratio against the subset size only")
    ap.add_argument("--cut", type=float, default=0.48, help="the rule's cut (aligned_map.auto_cut)")
    args = ap.parse_args()
    pose_cut = args.cut
    names = ("twin", "thin", "pos_mean", "pos_max", "pos_p99", "pos_frac", "coverage")
    if not args.sizes:
        print(f"{'cache':<22} {'subset':<10} " + " ".join(f"{n:>9}" for n in names) + "   s", flush=True)
    for path in args.caches:
        train = np.load(path, allow_pickle=False)["train"]
        if args.sizes:
            twin_by_size(train, path.stem)
            continue
        runs = [(f"{min(args.n, len(train))} s{s}",
                 np.sort(np.random.default_rng(s).permutation(len(train))[:args.n]), s)
                for s in (int(v) for v in args.seeds.split(","))]
        if args.full:
            runs.append((f"all {len(train)}", np.arange(len(train)), 0))
        for label, rows, seed in runs:
            t0 = time.perf_counter()
            r = stats(train[rows].astype(np.float32), seed)
            print(f"{path.stem:<22} {label:<10} " + " ".join(f"{r[n]:9.3f}" for n in names)
                  + f"  {time.perf_counter() - t0:4.0f}", flush=True)
        rule = [pose.decide(train, pose_cut, s) for s in (0, 1, 2)]
        print(f"{path.stem:<22} rule: twin ratio " + " / ".join(f"{d.twin_ratio:.3f}" for d in rule)
              + f" (seeds 0/1/2, {rule[0].images} images) -> aligned map {'on' if rule[0].enabled else 'off'}"
              + ("" if len({d.enabled for d in rule}) == 1 else " (seeds disagree)"), flush=True)


if __name__ == "__main__":
    main()
