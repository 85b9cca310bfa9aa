"""Does the aligned image term cost false rejects on parts that move, and not on fixed ones? The
premise of ``aligned_map: {enabled: auto}`` (calibration/methods/pose.py), checked on the feature
caches (benchmarks/feature_cache.py), synthetic turned / shifted sets included:

    python benchmarks/bench_pose_frr.py /work/featcache/{bottle,magnetic,loco,screw}_256.npz \\
        /tmp/pose/loco_rot160_256.npz /tmp/pose/loco_shift160_256.npz [--golden 60] [--seeds 0,1,2]

Per cache and seed: ``--golden`` train images are the golden set, up to 100 other train images the
new good parts (the synthetic sets: the first 60, as in bench_pose_rule.py, and the rest). A small
calibration: global_context with the aligned map (all dims, k 5, +-1 cell) fitted in 5 folds, the
held-out golden scores' maximum the threshold (~1% false-reject budget on 60 scores), then fitted on
all golden images and the new good parts scored: the share above the threshold (FRR) and their mean
score above the held-out golden ones in those scores' std (shift), for the default image score
(local z + region z) and with the aligned z added (image_weight 1), with the rule's twin ratio.
``--test``: instead, all train images golden and the cache's test good images the new parts (as
``inspector bench`` does, with this threshold instead of calibration's).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.methods import NoProgress, pose  # noqa: E402
from calibration.methods import global_context as gc_fit  # noqa: E402
from inspector.methods import global_context as gc  # noqa: E402
from inspector.methods import patchcore  # noqa: E402

FOLDS = 5


def terms(state: gc.State, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(default image score local z + region z, the aligned map's largest z) per image."""
    p = state.params
    lo = (patchcore.score(state.local, {"features": feats}, (256, 256)).image_scores - p.local_mean) / p.local_std
    rg = gc.region_z(state, feats).max(axis=1)
    al = gc.aligned_map(state, feats).reshape(len(feats), -1).max(axis=1)
    return (lo + rg).astype(np.float64), al.astype(np.float64)


def run(golden: np.ndarray, new: np.ndarray, seed: int) -> dict:
    config = gc.Config.model_validate({"global_context": {"aligned_map": {"enabled": True, "dims": None}}})
    n = len(golden)
    fold = np.random.default_rng(seed).permutation(n) % FOLDS
    held = {"default": np.empty(n), "aligned": np.empty(n)}
    for k in range(FOLDS):
        state = gc_fit.fit(golden[fold != k], config, seed, NoProgress())
        base, al = terms(state, golden[fold == k])
        held["default"][fold == k], held["aligned"][fold == k] = base, base + al
    state = gc_fit.fit(golden, config, seed, NoProgress())
    base, al = terms(state, new)
    out = {}
    for name, scores in (("default", base), ("aligned", base + al)):
        h = held[name]
        out[name] = (float((scores > h.max()).mean()), float((scores.mean() - h.mean()) / h.std(ddof=1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("caches", type=Path, nargs="+")
    ap.add_argument("--golden", type=int, default=60)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--test", action="store_true", help="all train golden, the test good images new")
    args = ap.parse_args()
    print(f"{'cache':<22} seed  twin   default FRR / shift   aligned FRR / shift   (new good parts)", flush=True)
    for path in args.caches:
        z = np.load(path, allow_pickle=False)
        train = z["train"]
        if args.test:
            for seed in (int(v) for v in args.seeds.split(",")):
                g, new = train.astype(np.float32), z["test"][z["labels"] == 0].astype(np.float32)
                r = run(g, new, seed)
                print(f"{path.stem + ' (test)':<22} {seed:>4}  {pose.decide(g, 0.48, seed).twin_ratio:.3f}  "
                      + "   ".join(f"{r[k][0] * 100:5.1f}% / {r[k][1]:+5.2f}" for k in ("default", "aligned"))
                      + f"   ({len(new)})", flush=True)
            continue
        synthetic = len(train) == 160  # the turned / shifted sets: the research set first
        for seed in (int(v) for v in args.seeds.split(",")):
            order = np.arange(len(train)) if synthetic else np.random.default_rng(seed).permutation(len(train))
            g = train[np.sort(order[:args.golden])].astype(np.float32)
            new = train[np.sort(order[args.golden:args.golden + 100])].astype(np.float32)
            r = run(g, new, seed)
            twin = pose.decide(g, 0.48, seed).twin_ratio
            print(f"{path.stem:<22} {seed:>4}  {twin:.3f}  "
                  + "   ".join(f"{r[k][0] * 100:5.1f}% / {r[k][1]:+5.2f}" for k in ("default", "aligned"))
                  + f"   ({len(new)})", flush=True)
            if synthetic:
                break  # one golden set only


if __name__ == "__main__":
    main()
