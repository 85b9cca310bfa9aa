"""Pixel maps of the default scorer (issues 12/13): which map post-processing or extra map branch
raises pixel AUROC on large / logical defects (magnetic_tile `uneven`, loco_juice_bottle) without
costing bottle. Runs on the feature caches (benchmarks/feature_cache.py):

    python benchmarks/bench_pixel_maps.py /work/featcache/bottle_256.npz /work/featcache/magnetic_256.npz \
        /work/featcache/loco_256.npz [--only fine,coarse,position]

PatchCore is fitted once per cache (all train images, seed 0; the default's map is PatchCore's,
the image score is global_context's and none of these variants touch it). Each variant is a map
only; the table gives its pixel AUROC (work image, every 2nd pixel, as bench_global_context.py),
per defect kind, the image AUROC of the map's own maximum (for information) and the extra
scoring cost per frame. Variants:

- ``sigma S``: PatchCore's map blurred with a Gaussian of S input pixels (default 4); ``sigma
  a+b``: the sum of two blurs;
- ``coarse kK``: a second PatchCore on the features average-pooled over KxK cells (stride 1,
  windows cut at the border), coreset bank of golden pooled features; both maps in golden
  z-units (each bank's golden images scored without their own rows, as global_context's local
  standardisation) and fused by ``+`` (sum) or ``max``;
- ``posnorm``: the fine map standardised per cell by the golden maps (own rows left out) at that
  cell: mean and std over golden images;
- ``nbr kK rR [images M]``: global_context's aligned-neighbour map (inspector/methods/aligned.py):
  each frame against its K nearest golden images by 4x4 layout, patch by patch within +-R cells,
  in z-units (golden images scored without themselves); M: golden images kept (k-center);
- ``pos rR``: exact nearest golden patch among all train patches within +-R cells of the same
  position (aligned parts), in z-units, alone and fused with the fine map.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_global_context import Cache  # noqa: E402
from calibration.evaluation import auroc  # noqa: E402
from calibration.methods import NoProgress  # noqa: E402
from calibration.methods import global_context as gc_fit  # noqa: E402
from calibration.methods import patchcore as pc_fit  # noqa: E402
from calibration.methods.aligned import farthest_images, pca_basis  # noqa: E402
from inspector.methods import aligned  # noqa: E402
from inspector.methods import global_context as gc  # noqa: E402
from inspector.methods.global_context import regions  # noqa: E402
from inspector.methods import patchcore  # noqa: E402
from inspector.methods.base import upsample_and_smooth  # noqa: E402

NBR_VARIANTS = ((5, 1, None), (10, 1, None), (5, 1, 100), (5, 0, None), (5, 2, None), (20, 1, None))
OOF_IMAGES = 60  # golden images scored without their own rows, for per-cell statistics


def box_pool(feats: np.ndarray, k: int) -> np.ndarray:
    """[N, D, h, w] -> the average over each KxK window (stride 1), windows cut at the border."""
    if k <= 1:
        return feats
    n, d, h, w = feats.shape
    r = k // 2
    c = np.zeros((n, d, h + 1, w + 1), np.float64)
    c[:, :, 1:, 1:] = feats.astype(np.float64).cumsum(2).cumsum(3)
    y0 = np.clip(np.arange(h) - r, 0, h)
    y1 = np.clip(np.arange(h) + r + 1, 0, h)
    x0 = np.clip(np.arange(w) - r, 0, w)
    x1 = np.clip(np.arange(w) + r + 1, 0, w)
    s = (c[:, :, y1][:, :, :, x1] - c[:, :, y0][:, :, :, x1] - c[:, :, y1][:, :, :, x0] + c[:, :, y0][:, :, :, x0])
    area = ((y1 - y0)[:, None] * (x1 - x0)[None]).astype(np.float64)
    return (s / area).astype(np.float32)


def oof_maps(feats: np.ndarray, state: patchcore.State, n_images: int, seed: int = 0) -> np.ndarray:
    """Golden patch maps [n, h, w] with each image's own bank rows left out (the logic of
    calibration/methods/global_context.py local_standardisation, keeping the whole map)."""
    n, d, h, w = feats.shape
    pick = np.sort(np.random.default_rng(seed).choice(n, min(n, n_images), replace=False))
    bank64 = state.memory_bank.astype(np.float64)
    bank_sq = (bank64 * bank64).sum(1)
    out = []
    for i in pick:
        q = np.ascontiguousarray(feats[i].reshape(d, -1).T, dtype=np.float32)
        dist, idx = state.searcher.search(q)
        own = np.unique(idx[dist <= 1e-3 * np.sqrt((q * q).sum(1)) + 1e-6])
        redo = np.flatnonzero(np.isin(idx, own))
        dist = dist.astype(np.float64)
        if len(redo) and len(own) < len(bank64):
            qr = q[redo].astype(np.float64)
            d2 = (qr * qr).sum(1)[:, None] + bank_sq[None] - 2.0 * qr @ bank64.T
            d2[:, own] = np.inf
            dist[redo] = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        out.append(dist.reshape(h, w))
    return np.asarray(out, np.float32)


def zstats(golden_maps: np.ndarray) -> tuple[float, float]:
    """(mean, std) of the golden maps' image maxima: a map's golden z-units."""
    m = golden_maps.reshape(len(golden_maps), -1).max(1)
    return float(m.mean()), float(max(m.std(ddof=1), 1e-6))


def position_search(train: np.ndarray, queries: np.ndarray, r: int, exclude=None) -> np.ndarray:
    """Exact distance of each query patch to the nearest train patch within +-r cells of its
    position. train [N, D, h, w], queries [M, D, h, w] -> [M, h, w]. ``exclude`` [M]: the train
    row each query image is (left out), or None."""
    n, d, h, w = train.shape
    m = len(queries)
    out = np.empty((m, h, w), np.float32)
    t = train.transpose(2, 3, 0, 1)  # [h, w, N, D]
    qq = queries.transpose(2, 3, 0, 1)  # [h, w, M, D]
    for y in range(h):
        ys = slice(max(0, y - r), min(h, y + r + 1))
        for x in range(w):
            xs = slice(max(0, x - r), min(w, x + r + 1))
            cand = t[ys, xs]  # [a, b, N, D]
            owner = np.broadcast_to(np.arange(n), cand.shape[:3]).reshape(-1)
            cand = cand.reshape(-1, d)
            q = qq[y, x]
            d2 = (q * q).sum(1)[:, None] + (cand * cand).sum(1)[None] - 2.0 * q @ cand.T
            if exclude is not None:
                d2[exclude[:, None] == owner[None]] = np.inf
            out[:, y, x] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


def image_descriptors(feats: np.ndarray) -> np.ndarray:
    """[N, D, h, w] -> [N, 16*D]: features averaged over a 4x4 grid (the part's layout)."""
    return aligned.layouts(feats, regions(feats.shape[2:], [4]))


def neighbour_image_search(train: np.ndarray, desc: np.ndarray, queries: np.ndarray, k: int, r: int,
                           exclude=None) -> np.ndarray:
    """SPADE-like: each query image's k nearest train images by layout descriptor, then each patch
    against those images' patches within +-r cells of its position (global_context's aligned map,
    inspector/methods/aligned.py). -> [M, h, w]."""
    return aligned.aligned_maps(queries, train, desc, regions(queries.shape[2:], [4]), k, r, exclude)


class Eval:
    """Pixel AUROC (all masked rows, and per defect kind) and map-max image AUROC of patch maps."""

    def __init__(self, c: Cache, masks: np.ndarray):
        self.c = c
        ch, cw = c.content
        self.truth = masks[c.pix_rows, :ch:2, :cw:2] > 0
        self.kinds = c.kinds[c.pix_rows]

    def __call__(self, maps: np.ndarray, sigma: float = 4.0, pixel_maps: np.ndarray | None = None) -> dict:
        c = self.c
        ch, cw = c.content
        pix = pixel_maps if pixel_maps is not None else upsample_and_smooth(maps[c.pix_rows], c.work_hw, sigma)[:, :ch:2, :cw:2]
        out = {"image": auroc(c.labels, maps.reshape(len(maps), -1).max(1)), "pixel": auroc(self.truth.ravel(), pix.ravel())}
        for k in np.unique(self.kinds):
            if k == "good":
                continue
            rows = (self.kinds == k) | (self.kinds == "good")
            out[str(k)] = auroc(self.truth[rows].ravel(), pix[rows].ravel())
        return out


def line(name: str, m: dict, ms: float | None = None) -> str:
    kinds = " ".join(f"{k}={v:.3f}" for k, v in m.items() if k not in ("image", "pixel"))
    cost = f"  +{ms:5.1f} ms" if ms is not None else "          "
    return f"  {name:<28} img(map max) {m['image']:.4f}  pixel {m['pixel']:.4f}{cost}  {kinds}"


def per_frame_ms(fn, n: int = 10) -> float:
    times = []
    for k in range(n):
        t = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def run_neighbours(c: Cache, ev, zf: np.ndarray, fine_gold: np.ndarray, variants) -> None:
    desc_all = image_descriptors(c.train)
    pick = np.sort(np.random.default_rng(0).choice(len(c.train), min(len(c.train), OOF_IMAGES), replace=False))
    for k, r, cap in variants:
        t1 = time.perf_counter()
        keep = np.arange(len(c.train)) if cap is None else farthest_images(desc_all, cap)
        train, desc = c.train[keep], desc_all[keep]
        # golden images scored without themselves: their row in the kept set (or none)
        where = {int(t): i for i, t in enumerate(keep)}
        excl = np.array([where.get(int(p), -1) for p in pick])
        nmap = neighbour_image_search(train, desc, c.test, k, r)
        ng = neighbour_image_search(train, desc, c.train[pick], k, r, exclude=excl)
        ms = per_frame_ms(lambda i: neighbour_image_search(train, desc, c.test[i:i + 1], k, r))
        nz = zstats(ng)
        zn = (nmap - nz[0]) / nz[1]
        print(f"  nbr k{k} r{r} images {len(keep)}: {time.perf_counter() - t1:.0f} s, golden nbr/fine median "
              f"distance {np.median(ng) / np.median(fine_gold):.3f}", flush=True)
        print(line(f"nbr k{k} r{r} alone", ev(zn), ms), flush=True)
        print(line(f"fine + nbr k{k} r{r}", ev(zf + zn)), flush=True)
        print(line(f"nbr k{k} r{r} alone, sigma 8", ev(zn, 8.0)), flush=True)
        print(line(f"nbr k{k} r{r} alone, sigma 16", ev(zn, 16.0)), flush=True)
        print(line(f"fine + nbr k{k} r{r}, sigma 8", ev(zf + zn, 8.0)), flush=True)
        print(line(f"max(fine, nbr k{k} r{r})", ev(np.maximum(zf, zn))), flush=True)


def run_region(c: Cache, ev, zf: np.ndarray) -> None:
    """The aligned map (k 5, +-1 cell) plus global_context's region term (map_weight x the 4x4
    cells' z that the cell's own map does not explain), as global_context's score adds it."""
    desc = image_descriptors(c.train)
    pick = np.sort(np.random.default_rng(0).choice(len(c.train), min(len(c.train), OOF_IMAGES), replace=False))
    nz = zstats(neighbour_image_search(c.train, desc, c.train[pick], 5, 1, exclude=pick))
    zn = (neighbour_image_search(c.train, desc, c.test, 5, 1) - nz[0]) / nz[1]
    one = gc.GlobalConfig(grids=[4], map_grids=[4])
    mean, prec, zst = gc_fit.fit_global(c.train, one, 0)
    d = gc.mahalanobis(gc.pooled(c.test, gc.regions(c.test.shape[2:], [4])), mean, prec.astype(np.float64))
    z = ((d - zst[:, 0]) / zst[:, 1]).astype(np.float32)
    for base, name in ((zf, "PatchCore"), (zn, "aligned")):
        for mw in (0.25, 0.5):
            print(line(f"{name} + {mw} region 4x4", ev(base + mw * gc.region_map(z, base, [4], [4]))), flush=True)


def run_pca(c: Cache, ev) -> None:
    """The aligned map (k 5, +-1 cell) on features projected to their top principal directions:
    a smaller bundle and a cheaper search, if the map keeps its quality."""
    pick = np.sort(np.random.default_rng(0).choice(len(c.train), min(len(c.train), OOF_IMAGES), replace=False))
    for dims in (32, 64):
        mean, basis = pca_basis(c.train, dims, 0)
        tr, te = aligned.project(c.train, mean, basis), aligned.project(c.test, mean, basis)
        desc = image_descriptors(tr)
        nz = zstats(neighbour_image_search(tr, desc, tr[pick], 5, 1, exclude=pick))
        zn = (neighbour_image_search(tr, desc, te, 5, 1) - nz[0]) / nz[1]
        ms = per_frame_ms(lambda i: neighbour_image_search(tr, desc, te[i:i + 1], 5, 1))
        print(line(f"aligned k5 r1, PCA {dims}", ev(zn), ms), flush=True)


def run(path: Path, only: set[str], coarse_ks) -> None:
    c = Cache(path)
    masks = np.load(path, allow_pickle=False)["masks"]
    ev = Eval(c, masks)
    config = patchcore.Config()
    t0 = time.perf_counter()
    fine = pc_fit.fit(c.train, config, 0, NoProgress())
    print(f"{c.name}: train {c.train.shape}, test {c.test.shape}, PatchCore fit {time.perf_counter() - t0:.0f} s",
          flush=True)
    fmap = patchcore.patch_scores(fine, c.test)[0]
    print(line("fine sigma 4 (default)", ev(fmap, 4.0)), flush=True)
    gold = oof_maps(c.train, fine, OOF_IMAGES)
    fz = zstats(gold)
    zf = (fmap - fz[0]) / fz[1]

    if "fine" in only:
        for s in (2.0, 8.0, 16.0):
            print(line(f"fine sigma {s:g}", ev(fmap, s)), flush=True)
        ch, cw = c.content
        pm = {s: upsample_and_smooth(fmap[c.pix_rows], c.work_hw, s)[:, :ch:2, :cw:2] for s in (4.0, 8.0, 16.0)}
        print(line("fine sigma 4+8", ev(fmap, pixel_maps=pm[4.0] + pm[8.0])), flush=True)
        print(line("fine sigma 4+16", ev(fmap, pixel_maps=pm[4.0] + pm[16.0])), flush=True)
        print(line("fine sigma max(4,16)", ev(fmap, pixel_maps=np.maximum(pm[4.0], pm[16.0]))), flush=True)
        del pm
        # per-cell standardisation by the golden out-of-fold maps
        mu, sd = gold.mean(0), np.maximum(gold.std(0, ddof=1), 1e-3 * gold.std())
        print(line("posnorm (d-mu)/sd", ev((fmap - mu) / sd)), flush=True)
        print(line("posnorm d-mu", ev(fmap - mu)), flush=True)
        print(line("fine + posnorm z", ev(zf + ((fmap - mu) / sd) / zstats((gold - mu) / sd)[1])), flush=True)

    if "coarse" in only:
        for k in coarse_ks:
            t1 = time.perf_counter()
            ptrain = box_pool(c.train, k)
            coarse = pc_fit.fit(ptrain, config, 0, NoProgress())
            cz = zstats(oof_maps(ptrain, coarse, OOF_IMAGES))
            del ptrain
            ptest = box_pool(c.test, k)
            cmap = patchcore.patch_scores(coarse, ptest)[0]
            ms = per_frame_ms(lambda i: patchcore.patch_scores(coarse, box_pool(c.test[i:i + 1], k)))
            zc = (cmap - cz[0]) / cz[1]
            print(f"  coarse k{k}: fit {time.perf_counter() - t1:.0f} s", flush=True)
            print(line(f"coarse k{k} alone", ev(zc)), flush=True)
            print(line(f"fine + coarse k{k}", ev(zf + zc), ms), flush=True)
            print(line(f"fine + coarse k{k}, sigma 8", ev(zf + zc, 8.0)), flush=True)
            print(line(f"max(fine, coarse k{k})", ev(np.maximum(zf, zc))), flush=True)
            print(line(f"fine + 0.5 coarse k{k}", ev(zf + 0.5 * zc)), flush=True)
            print(line(f"fine + max(0, coarse k{k})", ev(zf + np.maximum(zc, 0))), flush=True)
            del ptest

    if "neighbours" in only:
        run_neighbours(c, ev, zf, gold, NBR_VARIANTS)

    if "region" in only:
        run_region(c, ev, zf)

    if "pca" in only:
        run_pca(c, ev)

    if "position" in only:
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(len(c.train), min(len(c.train), OOF_IMAGES), replace=False))
        for r in (1, 2, 3):
            t1 = time.perf_counter()
            pmap = position_search(c.train, c.test, r)
            pg = position_search(c.train, c.train[pick], r, exclude=pick)
            ms = per_frame_ms(lambda i: position_search(c.train, c.test[i:i + 1], r), n=3)
            pz = zstats(pg)
            zp = (pmap - pz[0]) / pz[1]
            # alignment, as calibrate could measure it: golden distance restricted to the position
            # window over the unrestricted (coreset) one, both with own rows left out
            align = float(np.median(pg) / np.median(gold))
            print(f"  pos r{r}: {time.perf_counter() - t1:.0f} s, golden restricted/free median distance {align:.3f}",
                  flush=True)
            print(line(f"pos r{r} alone", ev(zp), ms), flush=True)
            print(line(f"fine + pos r{r}", ev(zf + zp)), flush=True)
            print(line(f"max(fine, pos r{r})", ev(np.maximum(zf, zp))), flush=True)


def cost() -> None:
    """The aligned map's own cost per frame (one frame, median of 20) at the CLI runs' patch grids,
    with random features of the backbone's 152 dims (and projected on 64, the default ``dims``) and
    as many golden images as each set has."""
    rng = np.random.default_rng(0)
    for name, hw, m in (("256x256 cache", (32, 32), 762), ("magnetic_tile", (28, 32), 762),
                        ("loco_juice_bottle", (28, 52), 335), ("mvtec_bottle", (60, 60), 209)):
        q = rng.normal(size=(1, 152, *hw)).astype(np.float32)
        boxes = regions(hw, [4])
        for dims in (152, 64):
            mean = np.zeros(152, np.float32)
            basis = None if dims == 152 else np.linalg.qr(rng.normal(size=(152, dims)))[0].astype(np.float32)
            golden = rng.normal(size=(m, dims, *hw)).astype(np.float16)
            lay = aligned.layouts(golden, boxes)
            sq = np.einsum("md,md->m", lay, lay)
            ms = per_frame_ms(lambda i: aligned.aligned_maps(aligned.project(q, mean, basis), golden, lay, boxes, 5, 1,
                                                             golden_sq=sq), n=20)
            print(f"  aligned map k5 r1, {name} grid {hw[0]}x{hw[1]}, {m} golden images, {dims} dims: "
                  f"{ms:.1f} ms/frame", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", type=Path, nargs="*")
    ap.add_argument("--cost", action="store_true", help="time the aligned map at the CLI runs' grids")
    ap.add_argument("--only", default="fine,coarse,neighbours,position", help="comma list of fine, coarse, neighbours, position, region, pca")
    ap.add_argument("--coarse", default="3,5,7", help="pooling windows of the coarse branch")
    args = ap.parse_args()
    if args.cost:
        cost()
    for path in args.caches:
        run(path, set(args.only.split(",")), [int(k) for k in args.coarse.split(",")])


if __name__ == "__main__":
    main()
