"""PatchCore vs global context (issue 13 item 3) on the feature caches (benchmarks/feature_cache.py).

    python benchmarks/bench_global_context.py /work/featcache/magnetic_256.npz [more caches...]

Fits PatchCore once per cache (all train images, seed 0), then the global branch for each single
grid (a region's Gaussian does not depend on the other grids, so grid sets combine exactly), and
prints image AUROC, pixel AUROC (at the work image, padding off, every 2nd pixel) and the escape
rate at 1% false rejects among the test's good images, for PatchCore and each (image grids, map
grids, weight, map_weight) variant; image AUROC per defect kind with --kinds. The sweep combines
the branches' outputs as inspector/methods/global_context.py's score does; the default config's
row (the first variant) is checked against that score itself.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import auroc, operating_point, threshold_at_frr  # noqa: E402
from calibration.methods import NoProgress  # noqa: E402
from calibration.methods import global_context as gc_fit  # noqa: E402
from calibration.methods import patchcore as pc_fit  # noqa: E402
from inspector.methods import global_context as gc  # noqa: E402
from inspector.methods import patchcore  # noqa: E402
from inspector.methods.base import upsample_and_smooth  # noqa: E402

SINGLE_GRIDS = (1, 2, 4, 8)  # each grid's regions are fitted on their own, so grid sets combine exactly
# (image grids, map grids, weight, map_weight); the first is the default config
VARIANTS = (([1, 2, 4], [4], 1.0, 0.5), ([1, 2, 4], [4], 2.0, 0.5), ([1, 2, 4], [4], 0.5, 0.5),
            ([1, 2, 4], [4], 1.0, 1.0), ([1, 2, 4], [4], 1.0, 0.0), ([1, 2, 4], [2, 4], 1.0, 0.5),
            ([1, 2, 4], [4, 8], 1.0, 0.5), ([1, 2, 4, 8], [4, 8], 1.0, 0.5), ([1], [1], 1.0, 0.5),
            ([1, 2], [2], 1.0, 0.5), ([4], [4], 1.0, 0.5))


class Cache:
    def __init__(self, path: Path):
        z = np.load(path, allow_pickle=False)
        self.name = path.stem
        self.train = z["train"].astype(np.float32)
        self.test = z["test"].astype(np.float32)
        self.labels = z["labels"].astype(int)
        self.kinds = z["kinds"]
        ch, cw = (int(v) for v in z["content_hw"])
        self.work_hw = tuple(int(v) for v in z["work_hw"])
        self.content = (ch, cw)
        use = (self.labels == 0) | z["has_mask"]
        self.pix_rows = np.flatnonzero(use)
        self.pix_truth = (z["masks"][use, :ch:2, :cw:2] > 0).ravel()


def metrics(c: Cache, image: np.ndarray, maps: np.ndarray, sigma: float) -> dict:
    good, bad = image[c.labels == 0], image[c.labels == 1]
    op = operating_point(good, bad, threshold_at_frr(good, 0.01))
    ch, cw = c.content
    pix = upsample_and_smooth(maps[c.pix_rows], c.work_hw, sigma)[:, :ch:2, :cw:2]
    out = {"image": auroc(c.labels, image), "pixel": auroc(c.pix_truth, pix.ravel()), "escape": op["escape_rate"]}
    out["kinds"] = {str(k): auroc(c.labels[(c.kinds == k) | (c.labels == 0)], image[(c.kinds == k) | (c.labels == 0)])
                    for k in np.unique(c.kinds) if k != "good"}
    return out


def row(name: str, m: dict, kinds: bool) -> str:
    s = f"  {name:<34} image {m['image']:.4f}  pixel {m['pixel']:.4f}  escape@1% {m['escape'] * 100:5.1f}%"
    if kinds:
        s += "  " + " ".join(f"{k}={v:.3f}" for k, v in m["kinds"].items())
    return s


def per_frame(score, test: np.ndarray) -> float:
    times = []
    for k in range(20):
        t = time.perf_counter()
        score({"features": test[k:k + 1]})
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def run(path: Path, kinds: bool) -> None:
    c = Cache(path)
    t0 = time.perf_counter()
    config = gc.Config()
    local = pc_fit.fit(c.train, config.local(), 0, NoProgress())
    t_local = time.perf_counter() - t0
    stats = gc_fit.local_standardisation(c.train, local, config.global_context.local_images, 0)
    pc = patchcore.score(local, {"features": c.test}, c.work_hw)
    print(f"{c.name}: train {c.train.shape}, test {c.test.shape}, PatchCore fit {t_local:.0f} s, "
          f"local z: mean {stats[0]:.3f} std {stats[1]:.3f}")
    sigma = config.smoothing_sigma
    print(row("patchcore", metrics(c, pc.image_scores, pc.patch_maps, sigma), kinds))
    local_z = (pc.patch_maps - stats[0]) / stats[1]
    image_local = (pc.image_scores - stats[0]) / stats[1]
    parts, z = {}, {}
    for g in SINGLE_GRIDS:
        t1 = time.perf_counter()
        one = config.global_context.model_copy(update={"grids": [g], "map_grids": [g]})
        parts[g] = gc_fit.fit_global(c.train, one, 0)
        state = gc_fit.assemble(local, stats, parts[g], config.model_copy(update={"global_context": one}),
                                c.train.shape)
        z[g] = gc.region_z(state, c.test)
        print(f"  grid {g}: fit {time.perf_counter() - t1:.1f} s")
    for grids, map_grids, w, mw in VARIANTS:
        zz = np.concatenate([z[g] for g in grids], axis=1)
        rmap = gc.region_map(zz, local_z, grids, map_grids)
        image, maps = image_local + w * zz.max(1), local_z + mw * rmap
        print(row(f"gc img{grids} map{map_grids} w={w} mw={mw}", metrics(c, image, maps, sigma), kinds))
        if (grids, map_grids, w, mw) == VARIANTS[0]:  # the sweep's arithmetic is the method's score
            glob = tuple(np.concatenate([parts[g][k] for g in grids]) for k in range(3))
            state = gc_fit.assemble(local, stats, glob, config, c.train.shape)
            sm = gc.score(state, {"features": c.test}, c.work_hw)
            np.testing.assert_allclose(sm.image_scores, image, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(sm.patch_maps, maps, rtol=1e-4, atol=1e-4)
            print(f"  scoring one frame (median of 20, image score only): patchcore "
                  f"{per_frame(lambda f: patchcore.score(local, f, c.work_hw), c.test):.2f} ms, global_context "
                  f"{per_frame(lambda f: gc.score(state, f, c.work_hw), c.test):.2f} ms")
    for g in (1, 4):
        print(row(f"global only grid {g}", metrics(c, z[g].max(1), gc.region_map(z[g], 0 * local_z, [g], [g]),
                                                    sigma), kinds))
    sys.stdout.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", type=Path, nargs="+")
    ap.add_argument("--kinds", action="store_true", help="image AUROC per defect kind too")
    args = ap.parse_args()
    for path in args.caches:
        run(path, args.kinds)


if __name__ == "__main__":
    main()
