"""f-AnoGAN (issue 16) on a feature cache, and why not the original AnoGAN search.

Fits the fanogan scorer on the cache's train features (timed), scores every test image through
the fitted head (torch, CPU: the same graph the engine runs after the backbone) and prints JSON:
image AUROC, escape rate at 1% false rejects, pixel AUROC, fit seconds, head ms/frame.

With --search-frames K it also scores K good and K defective test frames the original AnoGAN way
(Schlegl et al. 2017): per frame, the latent code of every patch is searched by ``--search-steps``
Adam steps minimising (1 - lambda) * rebuild error + lambda * discriminator-feature error
(lambda = 0.1), then scored with the same residual; it reports ms/frame and the AUROC of both on
those frames.

    python benchmarks/bench_fanogan.py --cache /work/featcache/bottle_256.npz --search-frames 5
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
from benchmarks.cache_eval import load_cache, metrics, score_in_batches, timed  # noqa: E402
from calibration.evaluation import auroc  # noqa: E402
from calibration.methods import NoProgress, fitter  # noqa: E402
from engines.backbones.heads import load_head  # noqa: E402
from inspector.methods import fanogan  # noqa: E402
from inspector.settings import settings_from_dict  # noqa: E402


def latent_search(head, feats: np.ndarray, steps: int, lam: float = 0.1, lr: float = 0.05) -> np.ndarray:
    """AnoGAN's search for one frame [1, D, h, w]: z per patch, ``steps`` Adam steps -> image score."""
    x = head.norm(torch.from_numpy(feats))
    with torch.no_grad():
        fx = head.disc_features(x)
    z = torch.randn(1, head.encoder[-1].out_channels, *x.shape[-2:], generator=torch.Generator().manual_seed(0))
    z.requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    for _ in range(steps):
        g = head.generator(z)
        loss = (1 - lam) * ((g - x) ** 2).mean() + lam * head.kappa * ((head.disc_features(g) - fx) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return head.residuals(x, head.generator(z)).flatten(1).max(1).values.numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--search-frames", type=int, default=0, help="good and defective frames for the AnoGAN search")
    ap.add_argument("--search-steps", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cache = load_cache(args.cache)
    golden = cache["train"].astype(np.float32)
    config = settings_from_dict({"scorer": {"type": "reconstruction", "method": "fanogan"}}, base_dir=Path("/")).scorer
    state, fit_s = timed(lambda: fitter("fanogan")(golden, config, 0, NoProgress()))
    head = load_head(state.params.head.model_dump(), state.arrays())
    head_ms = []

    def score(f, hw):
        t0 = time.perf_counter()
        with torch.no_grad():
            out = head(torch.from_numpy(f["features"])).numpy()
        head_ms.append((time.perf_counter() - t0) * 1000 / len(out))
        return fanogan.score(state, {"patch_scores": out}, hw)

    scores, maps, ms = score_in_batches(score, cache["test"], cache["work_hw"])
    out = {"cache": str(args.cache), "golden_images": int(len(golden)), "fit_seconds": round(fit_s, 1),
           "final_losses": state.params.final_losses, "head_ms_per_frame_torch": round(float(np.mean(head_ms)), 2),
           "scoring_ms_per_frame_incl_head": round(ms, 2),
           "all": metrics(scores, maps, cache, np.arange(len(scores)))}
    if args.search_frames:
        rng = np.random.default_rng(0)
        labels = cache["labels"].astype(int)
        rows = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:args.search_frames] for c in (0, 1)])
        t0 = time.perf_counter()
        searched = np.concatenate([latent_search(head, cache["test"][r:r + 1].astype(np.float32), args.search_steps)
                                   for r in rows])
        search_ms = (time.perf_counter() - t0) * 1000 / len(rows)
        out["anogan_search"] = {"frames": int(len(rows)), "steps": args.search_steps,
                                "ms_per_frame": round(search_ms, 1),
                                "times_the_encoder_head": round(search_ms / float(np.mean(head_ms)), 1),
                                "image_auroc_search": round(auroc(labels[rows], searched), 4),
                                "image_auroc_encoder_same_frames": round(auroc(labels[rows], scores[rows]), 4)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
