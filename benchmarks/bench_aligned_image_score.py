"""The aligned map's maximum as an image score (issues 12/13) on the feature caches
(benchmarks/feature_cache.py):

    python benchmarks/bench_aligned_image_score.py /work/featcache/{bottle,magnetic,loco,screw}_256.npz [--dims 64|none]

Fits global_context with ``aligned_map`` on (calibration/methods/global_context.py fit: PatchCore,
the region Gaussians, the aligned map's golden statistics by fit_aligned; all train images, seed 0
(--seeds: more coresets and golden samples), the default config otherwise) once per cache, then
combines its three golden-standardised terms, each from the method's own scoring functions:

- local z: PatchCore's largest patch distance, (d - local_mean) / local_std;
- region z: the largest pooled-region z (region_z);
- aligned z: the aligned map's maximum in its golden z-units (aligned_map).

Prints image AUROC, escape @ 1% FRR (threshold on the test's good images, as
bench_global_context.py), the gap (lowest defective minus highest good score, in the good scores'
std: positive = fully separated, how far) and, with --kinds, both per defect kind (escape at the
same threshold). The ``local + region`` row is checked against global_context's own score.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_global_context import Cache  # noqa: E402
from calibration.evaluation import auroc, operating_point, threshold_at_frr  # noqa: E402
from calibration.methods import NoProgress  # noqa: E402
from calibration.methods import global_context as gc_fit  # noqa: E402
from inspector.methods import global_context as gc  # noqa: E402
from inspector.methods import patchcore  # noqa: E402

# name -> image score from the three z terms (the first is global_context's own score)
VARIANTS = {
    "a) local + region (default)": lambda lo, rg, al: lo + rg,
    "b) aligned alone": lambda lo, rg, al: al,
    "c) aligned + region": lambda lo, rg, al: al + rg,
    "d) local + region + aligned": lambda lo, rg, al: lo + rg + al,
    "d') local + region + 0.5 aligned": lambda lo, rg, al: lo + rg + 0.5 * al,
    "e) max(local, aligned) + region": lambda lo, rg, al: np.maximum(lo, al) + rg,
    "   local alone (PatchCore)": lambda lo, rg, al: lo,
}


def image_metrics(c: Cache, image: np.ndarray) -> dict:
    """Image AUROC, escape at 1% FRR on the test's good images, and both per defect kind."""
    good = image[c.labels == 0]
    thr = threshold_at_frr(good, 0.01)
    out = {"image": auroc(c.labels, image), "escape": operating_point(good, image[c.labels == 1], thr)["escape_rate"],
           "kinds": {},
           # how far the defects sit above the goods, in the goods' std: tells saturated sets' rules apart
           "gap": float((image[c.labels == 1].min() - good.max()) / max(good.std(ddof=1), 1e-12))}
    for k in np.unique(c.kinds[c.labels == 1]):
        rows = (c.kinds == k) | (c.labels == 0)
        out["kinds"][str(k)] = (auroc(c.labels[rows], image[rows]), float((image[c.kinds == k] <= thr).mean()))
    return out


def line(name: str, m: dict, kinds: bool) -> str:
    s = f"  {name:<34} image {m['image']:.4f}  escape@1% {m['escape'] * 100:5.1f}%  gap {m['gap']:+6.2f}"
    if kinds:
        s += "  " + " ".join(f"{k}={a:.3f}/{e * 100:.0f}%" for k, (a, e) in m["kinds"].items())
    return s


def run(c: Cache, dims, kinds: bool, seed: int) -> dict:
    t0 = time.perf_counter()
    config = gc.Config.model_validate({"global_context": {"aligned_map": {"enabled": True, "dims": dims}}})
    state = gc_fit.fit(c.train, config, seed, NoProgress())
    p = state.params
    local = patchcore.score(state.local, {"features": c.test}, c.work_hw).image_scores
    lo = (local - p.local_mean) / p.local_std
    rg = gc.region_z(state, c.test).max(axis=1)
    al = gc.aligned_map(state, c.test).reshape(len(c.test), -1).max(axis=1)
    own = gc.score(state, {"features": c.test}, c.work_hw).image_scores  # the sweep's a) is the method's score
    np.testing.assert_allclose(VARIANTS["a) local + region (default)"](lo, rg, al), own, rtol=1e-4, atol=1e-4)
    good = c.labels == 0
    z = ", ".join(f"{n} {v[good].mean():.2f}/{v[good].std():.2f}" for n, v in (("local", lo), ("region", rg),
                                                                                ("aligned", al)))
    # golden aligned / local map maxima: how much a position window costs on golden parts (misalignment);
    # in the same distance units only with dims none
    print(f"{c.name}: train {c.train.shape}, test {c.test.shape} ({int((~good).sum())} defective), fit+score "
          f"{time.perf_counter() - t0:.0f} s, seed {seed}, aligned dims {p.aligned.dims}, golden aligned/local "
          f"maxima {p.aligned.mean / p.local_mean:.3f}; test good images' z mean/std: {z}", flush=True)
    out = {}
    for name, fn in VARIANTS.items():
        out[name] = image_metrics(c, fn(lo, rg, al).astype(np.float64))
        print(line(name, out[name], kinds), flush=True)
    return out


def summary(results: dict) -> None:
    """results[cache][seed][variant] -> a markdown table: image AUROC / escape @ 1% FRR, mean over seeds."""
    names = list(results)
    print("\n| image score (mean over seeds) | " + " | ".join(f"{n} AUROC / escape" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for v in VARIANTS:
        cells = []
        for n in names:
            runs = [r[v] for r in results[n].values()]
            auc, esc = np.mean([m["image"] for m in runs]), np.mean([m["escape"] for m in runs])
            cells.append(f"{auc:.4f} / {esc * 100:.1f}%")
        print(f"| {v.strip()} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", type=Path, nargs="+")
    ap.add_argument("--dims", default="64", help="the aligned map's PCA dims (the method's default 64; none: all)")
    ap.add_argument("--seeds", default="0", help="the fits' seeds, comma list (coreset, sampled golden images)")
    ap.add_argument("--kinds", action="store_true", help="image AUROC / escape per defect kind too")
    args = ap.parse_args()
    dims = None if args.dims.lower() == "none" else int(args.dims)
    results = {}
    for path in args.caches:
        c = Cache(path)
        results[c.name] = {s: run(c, dims, args.kinds, s) for s in (int(v) for v in args.seeds.split(","))}
    summary(results)


if __name__ == "__main__":
    main()
