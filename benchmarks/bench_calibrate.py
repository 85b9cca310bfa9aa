"""Benchmark calibration time: `inspector calibrate` on a golden folder, through the real CLI.

Runs `inspector calibrate --golden DIR --out TMP --no-report --quiet` (default config unless
--config) in a subprocess, --runs times, and prints per run: wall time (interpreter start and
imports included), the child's CPU time (user + sys), and the stage times calibrate records in
the bundle's manifest (read, export, features, decide (what the config leaves to the golden
images, e.g. the fixed-pose rule), fit_split, thresholds, detectability, fit_all,
write; fit_all runs beside fit_split and the held-out steps for a method without an engine head,
and fit_all_wait is how long calibrate then still waited for it; "other" is the wall time outside
the sequential stages: interpreter start, imports, the summary). Also printed: the CPU
(model, cores, whether it has AVX-512 / bf16), the precision the default engine runs, and the
load average before and after, since on 2 cores anything else running moves wall times a lot.

    python benchmarks/bench_calibrate.py --golden ../shared/data/mvtec_bottle/train/good [--runs 3]
        [--config F] [--no-bf16] [--out docs/results/calibrate_bottle.json]

--no-bf16 sets INSPECTOR_CPU_NO_BF16=1 (the engine treats the CPU as one without bf16: fp32).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("read", "export", "features", "decide", "fit_split", "thresholds", "detectability", "fit_all_wait", "fit_all",
          "write")  # calibrate's order
# run beside the others (calibrate refits a method without an engine head on a thread); its wall
# time is listed but not part of "other"
OVERLAPPED = "fit_all"
CHILD = "import sys; sys.path.insert(0, {root!r}); from inspector.cli import main; sys.exit(main(sys.argv[1:]))"


def cpu_description() -> dict:
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def engine_precision(env: dict) -> str:
    code = ("import sys; sys.path.insert(0, %r); from engines.openvino_engine import default_precision; "
            "print(default_precision())" % str(ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def run_once(golden: Path, config: Path | None, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as tmp:
        out = Path(tmp) / "bundle"
        args = ["calibrate", "--golden", str(golden), "--out", str(out), "--no-report", "--quiet"]
        if config:
            args += ["--config", str(config)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT)), *args], env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            sys.exit(f"inspector calibrate failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["metrics"]["seconds"]
    return {"wall_s": round(wall, 2),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 2),
            "stages_s": stages, "other_s": round(wall - sum(v for k, v in stages.items()
                                                 if not (k == OVERLAPPED and "fit_all_wait" in stages)), 2),
            "images": manifest["golden"]["images"], "bank": manifest["scorer"]["params"].get("bank_size"),
            "image_threshold": manifest["thresholds"]["image"],
            "precision": manifest["engine"]["calibrated_precision"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", required=True, type=Path, help="folder of golden images (e.g. DATASET/train/good)")
    ap.add_argument("--config", type=Path, help="inspector YAML config (default: the defaults)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-bf16", action="store_true", help="INSPECTOR_CPU_NO_BF16=1: the fp32 path on a bf16 CPU")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    a = ap.parse_args()
    env = dict(os.environ)
    if a.no_bf16:
        env["INSPECTOR_CPU_NO_BF16"] = "1"
    result = {"command": " ".join(sys.argv), "cpu": cpu_description(), "engine_precision": engine_precision(env),
              "load_before": os.getloadavg(), "runs": []}
    print(f"CPU {result['cpu']}, default engine precision {result['engine_precision']}, "
          f"load average {result['load_before'][0]:.2f}")
    for i in range(a.runs):
        r = run_once(a.golden, a.config, env)
        result["runs"].append(r)
        stages = ", ".join(f"{k} {r['stages_s'][k]:.1f}" + (" (beside the others)" if k == OVERLAPPED and
                                                             "fit_all_wait" in r["stages_s"] else "")
                           for k in STAGES if k in r["stages_s"])
        print(f"run {i + 1}: wall {r['wall_s']:.1f} s, CPU {r['cpu_s']:.1f} s ({r['images']} images, bank {r['bank']}, "
              f"{r['precision']}, threshold {r['image_threshold']:.4f}); {stages}, other {r['other_s']:.1f}")
    result["load_after"] = os.getloadavg()
    walls = [r["wall_s"] for r in result["runs"]]
    result["wall_median_s"] = statistics.median(walls)
    print(f"wall median {result['wall_median_s']:.1f} s, best {min(walls):.1f} s; "
          f"load average after {result['load_after'][0]:.2f}")
    if a.out:
        a.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
