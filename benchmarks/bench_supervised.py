"""The supervised scorer (issue 16) against PatchCore, with defect types held out.

From a feature cache (benchmarks/feature_cache.py): PatchCore and the supervised scorer are fitted
on train/good; the classifier also trains on ``--share`` of the test images of the ``--seen`` defect
types (seeded pick). Both are judged on the remaining test images: the test good images against
(a) the held-out images of the seen types and (b) every image of the other (unseen) types. Prints
JSON: image AUROC, escape rate at 1% false rejects, pixel AUROC, fit seconds, scoring ms/frame.

    python benchmarks/bench_supervised.py --cache /work/featcache/magnetic_256.npz \
        --seen blowhole break crack --share 0.5
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.cache_eval import load_cache, metrics, score_in_batches, timed  # noqa: E402
from calibration.methods import NoProgress, fitter  # noqa: E402
from inspector.methods import patchcore, supervised  # noqa: E402
from inspector.settings import settings_from_dict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--seen", nargs="+", required=True, help="defect types the classifier may train on")
    ap.add_argument("--share", type=float, default=0.5, help="share of each seen type's images trained on")
    ap.add_argument("--weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    cache = load_cache(args.cache)
    golden = cache["train"].astype(np.float32)
    kinds = cache["kinds"]
    rng = np.random.default_rng(args.seed)
    train_rows = []
    for kind in args.seen:
        rows = np.flatnonzero(kinds == kind)
        train_rows += list(rng.permutation(rows)[:int(round(args.share * len(rows)))])
    train_rows = np.sort(np.array(train_rows, int))
    rest = np.setdiff1d(np.arange(len(kinds)), train_rows)
    good = rest[kinds[rest] == "good"]
    seen = rest[np.isin(kinds[rest], args.seen)]
    unseen = rest[(kinds[rest] != "good") & ~np.isin(kinds[rest], args.seen)]
    config = settings_from_dict({"scorer": {"type": "supervised", "classifier": {"weight": args.weight}}},
                                base_dir=Path("/")).scorer
    defects = cache["test"][train_rows].astype(np.float32)
    state, fit_s = timed(lambda: fitter("supervised")(golden, config, args.seed, NoProgress(), defects=defects))
    _, pc_fit_s = timed(lambda: fitter("patchcore")(golden, config.patchcore_config(), args.seed, NoProgress()))
    test = cache["test"]
    out = {"cache": str(args.cache), "seen_types": args.seen, "share_trained_on": args.share,
           "defect_images_trained_on": int(len(train_rows)), "golden_images": int(len(golden)),
           "fit_seconds": {"supervised": round(fit_s, 1), "patchcore": round(pc_fit_s, 1)},
           "training": state.params.training.model_dump(), "results": {}}
    for name, fn in (("patchcore", lambda f, hw: patchcore.score(state.patchcore, f, hw)),
                     ("supervised", lambda f, hw: supervised.score(state, f, hw))):
        scores, maps, ms = score_in_batches(fn, test, cache["work_hw"])
        res = {"scoring_ms_per_frame": round(ms, 2)}
        for part, rows in (("seen", seen), ("unseen", unseen)):
            if len(rows):
                res[part] = metrics(scores, maps, cache, np.concatenate([good, rows]))
        out["results"][name] = res
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
