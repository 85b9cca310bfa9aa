"""The discriminator (SimpleNet-style, inspector/methods/discriminator.py) against PatchCore on
cached patch features (benchmarks/feature_cache.py), for issue 13 research.

Fits both methods with calibration's own fitters on the cache's train features, scores the test
features (the discriminator's head run in torch, as the torch engine runs it), and prints image
AUROC, pixel AUROC (maps at the work image, padding cut off, every 2nd pixel) and the escape rate
at 1% false rejects on the test good images, plus fit seconds and the head's ms per frame.
Variants of the discriminator's config are given as JSON (merged into ``scorer.discriminator``):

    python benchmarks/bench_discriminator.py /work/featcache/bottle_256.npz \
        --variant '{}' --variant '{"noise_std": 0.5}'
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import auroc, operating_point, threshold_at_frr  # noqa: E402
from calibration.methods import NoProgress, fitter  # noqa: E402
from engines.backbones.heads import load_head  # noqa: E402
from inspector.methods.base import score_patch_maps  # noqa: E402
from inspector.methods.registry import Scorer, method_of  # noqa: E402
from inspector.settings import settings_from_dict  # noqa: E402


def _metrics(sm, labels, masks, has_mask, content_hw) -> dict:
    scores = sm.image_scores.astype(np.float64)
    good, bad = scores[labels == 0], scores[labels == 1]
    ch, cw = content_hw
    usable = (labels == 0) | has_mask
    maps = sm.pixel_maps[usable][:, :ch:2, :cw:2]
    truth = masks[usable][:, :ch:2, :cw:2] > 0
    return {"image_auroc": round(auroc(labels, scores), 4),
            "pixel_auroc": round(auroc(truth.ravel(), maps.ravel()), 4) if truth.any() else None,
            "escape_at_1pct_frr": round(operating_point(good, bad, threshold_at_frr(good, 0.01))["escape_rate"], 3)}


def run(config_data: dict, train: np.ndarray, test: np.ndarray, work_hw, seed: int):
    """(ScoreMap of the test set, fit seconds, head ms per frame or None, TrainingSummary or None)."""
    config = settings_from_dict({"scorer": config_data}, base_dir=Path("/")).scorer
    t0 = time.perf_counter()
    state = fitter(config.method)(train, config, seed, NoProgress())
    fit_s = time.perf_counter() - t0
    method = method_of(config.method)
    if method.HEAD is None:
        return Scorer(method, state).score({"features": test}, work_hw), fit_s, None, None
    description, weights = state.network_head()
    head = load_head(description, weights)
    with torch.no_grad():
        one = torch.from_numpy(test[:1])
        head(one)
        t1 = time.perf_counter()
        for _ in range(20):
            head(one)
        ms = (time.perf_counter() - t1) / 20 * 1000
        out = torch.cat([head(torch.from_numpy(test[s:s + 16])) for s in range(0, len(test), 16)]).numpy()
    p = state.params
    return score_patch_maps(out[:, 0], work_hw, p.smoothing_sigma), fit_s, ms, p.training


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", type=Path, help="an npz made by benchmarks/feature_cache.py")
    ap.add_argument("--variant", action="append", default=[], help="JSON merged into scorer.discriminator")
    ap.add_argument("--no-patchcore", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for scoring the heads")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    z = np.load(a.cache, allow_pickle=False)
    train, test = z["train"].astype(np.float32), z["test"].astype(np.float32)
    labels, masks, has_mask = z["labels"], z["masks"], z["has_mask"]
    work_hw, content_hw = tuple(int(v) for v in z["work_hw"]), tuple(int(v) for v in z["content_hw"])
    print(f"{a.cache.name}: train {train.shape}, test {test.shape} ({int(labels.sum())} defective)", flush=True)
    runs = [] if a.no_patchcore else [("patchcore", {"type": "memory_bank", "method": "patchcore"})]
    for v in a.variant or ["{}"]:
        runs.append((f"discriminator {v}", {"type": "discriminative", "method": "discriminator",
                                            "discriminator": json.loads(v)}))
    for name, data in runs:
        sm, fit_s, ms, training = run(data, train, test, work_hw, a.seed)
        m = _metrics(sm, labels, masks, has_mask, content_hw)
        head = f"  head {ms:.2f} ms/frame" if ms is not None else ""
        if training is not None:
            head += f"  epochs {training.epochs_run} (best {training.best_epoch}, val {training.best_val_loss:.4f})"
        print(f"{name:60s} image {m['image_auroc']:.4f}  pixel {m['pixel_auroc']}  "
              f"escape@1% {m['escape_at_1pct_frr']:.3f}  fit {fit_s:.1f}s{head}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
