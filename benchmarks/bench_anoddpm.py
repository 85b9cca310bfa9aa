"""AnoDDPM (issue 16) on a CPU, measured: fit seconds and, for each number of DDIM denoising
steps, the head's ms/frame (torch, CPU: the graph the engine would run after the backbone) and
image / pixel AUROC and escape rate at 1% false rejects. The method itself refuses CPU engines;
this measures what a CPU would cost (allow_cpu).

    python benchmarks/bench_anoddpm.py --cache /work/featcache/bottle_256.npz --steps 1 3 5 10
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
from calibration.methods import NoProgress, fitter  # noqa: E402
from calibration.methods.anoddpm import alpha_bars, ddim_schedule  # noqa: E402
from engines.backbones.heads import load_head  # noqa: E402
from inspector.methods import anoddpm  # noqa: E402
from inspector.settings import settings_from_dict  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 3, 5, 10])
    ap.add_argument("--train-steps", type=int, default=1500)
    ap.add_argument("--t-lambda", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cache = load_cache(args.cache)
    golden = cache["train"].astype(np.float32)
    config = settings_from_dict({"scorer": {"type": "reconstruction", "method": "anoddpm", "anoddpm": {
        "allow_cpu": True, "train_steps": args.train_steps, "t_lambda": args.t_lambda}}}, base_dir=Path("/")).scorer
    state, fit_s = timed(lambda: fitter("anoddpm")(golden, config, 0, NoProgress()))
    out = {"cache": str(args.cache), "golden_images": int(len(golden)), "fit_seconds": round(fit_s, 1),
           "train_steps": args.train_steps, "t_lambda": args.t_lambda, "final_loss": state.params.final_loss,
           "by_denoise_steps": {}}
    head = load_head(state.params.head.model_dump(), state.arrays())
    abar = torch.from_numpy(alpha_bars(config.anoddpm.diffusion_steps)).float()
    for k in args.steps:
        schedule = ddim_schedule(args.t_lambda, k)
        head.steps = len(schedule) - 1
        head.timesteps = torch.from_numpy(schedule[:-1].astype(np.float32))
        head.alpha_bars = abar[torch.from_numpy(schedule)]
        spent = []

        def score(f, hw):
            t0 = time.perf_counter()
            with torch.no_grad():
                o = head(torch.from_numpy(f["features"])).numpy()
            spent.append((time.perf_counter() - t0) * 1000 / len(o))
            return anoddpm.score(state, {"patch_scores": o}, hw)

        scores, maps, _ = score_in_batches(score, cache["test"], cache["work_hw"])
        out["by_denoise_steps"][k] = {"head_ms_per_frame_torch": round(float(np.mean(spent)), 2),
                                      **metrics(scores, maps, cache, np.arange(len(scores)))}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
