"""Why pooled pixel AUROC is below every per-type pixel AUROC (issues 12/13), on the feature caches
(benchmarks/feature_cache.py), for the default's map (global_context's aligned map, `fusion: replace`):

    python benchmarks/bench_pooled_pixel.py /work/featcache/magnetic_256.npz:../shared/data/magnetic_tile \
        /work/featcache/loco_256.npz:../shared/data/loco_juice_bottle \
        /work/featcache/bottle_256.npz:../shared/data/mvtec_bottle [--trim 0,8]

Each cache is paired with its dataset only for the frames' sizes: `inspector bench` pools pixels at
frame resolution, so a frame counts by its area (magnetic_tile's frames differ 7x); here each
pixel of the work image (every 2nd) is weighted by its frame's area over the work image's.

global_context is fitted with the aligned map on (all train images, seed 0, the default config
otherwise; ``--trim T``: the aligned map's ``trim``). Printed per cache:

- pooled pixel AUROC and its two parts: defect pixels against the good frames' pixels
  (``vs good``) and against the normal pixels of the defective frames (``vs defect frames``), with
  each part's share of the normal pixels; per type as `inspector bench` gives it (good + that type);
- the cross table: each type's defect pixels against each type's normal pixels;
- the same with a ring of R work pixels around each defect left out of the normal pixels (the
  map's spread past the mask, or the mask's extent);
- twins: a test frame's nearest golden images by the aligned map's layout, nearest over 10th
  nearest (golden images among themselves for reference: a low ratio = re-shots of one part);
  frames with golden images below ``TWIN`` x their 10th nearest (no labels used);
- the map with those twins left out of each frame's neighbours (every frame alike: a line where
  every part is new), and map variants there: the per-frame floor (own percentile) subtracted,
  PatchCore's z added; and the image score's AUROC / escapes with the aligned term from that map.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import auroc, mvtec_test_set, operating_point, threshold_at_frr  # noqa: E402
from calibration.methods import NoProgress  # noqa: E402
from calibration.methods import global_context as gc_fit  # noqa: E402
from inspector.methods import aligned, patchcore  # noqa: E402
from inspector.methods import global_context as gc  # noqa: E402
from inspector.methods.base import upsample_and_smooth  # noqa: E402

BINS = 1 << 16
TWIN = 0.8  # a golden image nearer than this x the frame's 10th nearest is the same part re-shot


def binned_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC from weighted histograms over the same bins (ties in a bin counted half)."""
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (pos.sum() * neg.sum()))


class Pooled:
    """Frame-area-weighted pixel histograms of a cache's masked and good test frames."""

    def __init__(self, cache: Path, dataset: Path):
        z = np.load(cache, allow_pickle=False)
        labels = z["labels"].astype(int)
        self.rows = np.flatnonzero((labels == 0) | z["has_mask"])
        self.kinds = z["kinds"].astype(str)[self.rows]
        self.work_hw = tuple(int(v) for v in z["work_hw"])
        self.content = tuple(int(v) for v in z["content_hw"])
        ch, cw = self.content
        self.truth = z["masks"][self.rows, :ch:2, :cw:2] > 0
        items = mvtec_test_set(dataset)
        if len(items) != len(labels):
            raise SystemExit(f"{dataset} has {len(items)} test images, {cache} {len(labels)}")
        area = np.array([np.prod(cv2.imread(str(items[r].path), cv2.IMREAD_UNCHANGED).shape[:2]) for r in self.rows])
        self.weight = area / self.truth[0].size

    def pixels(self, patch_maps: np.ndarray, sigma: float) -> np.ndarray:
        ch, cw = self.content
        return upsample_and_smooth(patch_maps[self.rows], self.work_hw, sigma)[:, :ch:2, :cw:2]

    def hists(self, pix: np.ndarray, drop: np.ndarray | None = None) -> dict:
        """{kind: (defect hist, normal hist)}; ``drop``: normal pixels left out."""
        lo, hi = float(pix.min()), float(pix.max())
        idx = np.clip(((pix - lo) * (BINS / max(hi - lo, 1e-12))).astype(np.int64), 0, BINS - 1)
        out = {}
        for k in np.unique(self.kinds):
            r = self.kinds == k
            w = np.broadcast_to(self.weight[r][:, None, None], idx[r].shape)
            t = self.truth[r]
            n = ~t if drop is None else ~t & ~drop[r]
            out[k] = (np.bincount(idx[r][t], w[t], BINS), np.bincount(idx[r][n], w[n], BINS))
        return out

    def summary(self, pix: np.ndarray, drop: np.ndarray | None = None) -> str:
        h = self.hists(pix, drop)
        pos = sum(v[0] for v in h.values())
        neg_good = h["good"][1]
        neg_def = sum(v[1] for k, v in h.items() if k != "good")
        share = neg_def.sum() / (neg_def.sum() + neg_good.sum())
        kinds = " ".join(f"{k}={binned_auc(v[0], neg_good + v[1]):.3f}" for k, v in h.items() if k != "good")
        return (f"pooled {binned_auc(pos, neg_good + neg_def):.4f}  vs good {binned_auc(pos, neg_good):.4f}  "
                f"vs defect frames {binned_auc(pos, neg_def):.4f} ({share:.0%} of normal px) | {kinds}")

    def cross(self, pix: np.ndarray) -> str:
        h = self.hists(pix)
        ks = list(h)
        lines = ["    defect \\ normal of " + " ".join(f"{k:>12}" for k in ks)]
        for p in ks:
            if h[p][0].sum() > 0:
                lines.append(f"    {p:<20} " + " ".join(f"{binned_auc(h[p][0], h[n][1]):12.3f}" for n in ks))
        return "\n".join(lines)

    def ring(self, r: int) -> np.ndarray:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        return np.stack([cv2.dilate(t.astype(np.uint8), k) > 0 for t in self.truth]) & ~self.truth


def neighbour_maps(state: gc.State, feats: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """The aligned map in golden z-units as the method makes it, each frame's ``exclude`` golden
    images (bool [N, M]) left out of its neighbours."""
    a = state.params.aligned
    q = aligned.project(feats, state.aligned_mean, state.aligned_basis)
    d = state.aligned_refs.maps(q, a.k, a.radius, a.trim, exclude)
    return (d - np.float32(a.mean)) / np.float32(a.std)


def twins(state: gc.State, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(nearest / 10th nearest golden layout distance [N], the golden images below TWIN x the 10th [N, M])."""
    q = aligned.project(feats, state.aligned_mean, state.aligned_basis)
    lq = aligned.layouts(q, state.aligned_boxes).astype(np.float64)
    g = state.aligned_refs.layouts.astype(np.float64)
    d = np.sqrt(np.maximum((lq * lq).sum(1)[:, None] + (g * g).sum(1)[None] - 2.0 * lq @ g.T, 0.0))
    s = np.sort(d, axis=1)
    return s[:, 0] / s[:, 9], d < TWIN * s[:, 9:10]


def image_terms(state: gc.State, test: np.ndarray, labels: np.ndarray, az: np.ndarray, free: np.ndarray) -> None:
    """Image AUROC and escapes at 1% FRR (threshold on the test's good images) of the method's image
    score, without its aligned term, and with that term from the map with twins left out."""
    image = gc.score(state, {"features": test}, tuple(test.shape[2:])).image_scores.astype(np.float64)
    w = state.params.aligned.image_weight
    top = lambda m: m.reshape(len(m), -1).max(axis=1)  # noqa: E731
    for name, s in (("as the method scores", image), ("without the aligned term", image - w * top(az)),
                    ("aligned term twins left out", image - w * top(az) + w * top(free))):
        good = s[labels == 0]
        esc = operating_point(good, s[labels == 1], threshold_at_frr(good, 0.01))["escape_rate"]
        print(f"    image score {name:<28} AUROC {auroc(labels, s):.4f}  escape @ 1% FRR {esc:.3f}", flush=True)


def run(cache: Path, dataset: Path, trim: int, sigma: float = 4.0) -> None:
    z = np.load(cache, allow_pickle=False)
    train, test = z["train"].astype(np.float32), z["test"].astype(np.float32)
    px = Pooled(cache, dataset)
    config = gc.Config.model_validate({"global_context": {"aligned_map": {"enabled": True, "trim": trim}}})
    state = gc_fit.fit(train, config, 0, NoProgress())
    p = state.params
    to_px = lambda zmap: px.pixels(p.local_mean + p.local_std * zmap, sigma)  # noqa: E731
    az = neighbour_maps(state, test)
    pix = to_px(az)
    print(f"{cache.stem} ({dataset.name}): aligned map, trim {trim}", flush=True)
    print(f"  default map                    {px.summary(pix)}")
    print(px.cross(pix))
    for r in (4, 8, 16):
        print(f"  ring {2 * r:2d} work px left out       {px.summary(pix, px.ring(r))}")
    ratio, twin = twins(state, test)
    golden = aligned.layouts(state.aligned_golden.astype(np.float32), state.aligned_boxes).astype(np.float64)
    dg = np.sqrt(np.maximum(((golden[:, None] - golden[None]) ** 2).sum(-1), 0.0))
    np.fill_diagonal(dg, np.inf)
    sg = np.sort(dg, axis=1)
    r, t = ratio[px.rows], twin[px.rows].any(1)
    print(f"  twins: nearest/10th nearest golden layout, golden among themselves {np.median(sg[:, 0] / sg[:, 9]):.2f}; "
          + " ".join(f"{k} {np.median(r[px.kinds == k]):.2f} ({t[px.kinds == k].mean():.0%} with twins)"
                     for k in np.unique(px.kinds)))
    free = neighbour_maps(state, test, exclude=twin)
    fp = to_px(free)
    print(f"  twins left out (every frame)   {px.summary(fp)}", flush=True)
    for q in (5, 25, 50):
        floor = np.percentile(free.reshape(len(free), -1), q, axis=1)[:, None, None]
        print(f"    minus own p{q:<2}                 {px.summary(to_px(free - floor))}", flush=True)
    image_terms(state, test, z["labels"].astype(int), az, free)
    local = patchcore.score(state.local, {"features": test}, px.work_hw).patch_maps
    with_local = free + (local - p.local_mean) / p.local_std
    print(f"    + PatchCore z                {px.summary(to_px(with_local))}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", help="CACHE.npz:DATASET_DIR")
    ap.add_argument("--trim", default="0", help="the aligned map's trim values, comma list")
    args = ap.parse_args()
    for pair in args.pairs:
        cache, dataset = pair.split(":", 1)
        for t in (int(v) for v in args.trim.split(",")):
            run(Path(cache), Path(dataset), t)


if __name__ == "__main__":
    main()
