"""What a frame costs with and without tiling (issue 12, geometry from the golden frames).

Draws bottle-sized frames (900x900: a 7x7 grid of the synthetic parts, calibration/synthetic.py),
calibrates one bundle per geometry on them with the daemon's own calibration, and scores test
frames one at a time through the daemon's pipeline (runtime.build_pipeline → inspect) after
warm-up. Reports, per geometry, ms per frame (median, p95) for inference, scoring and the total,
and ms per megapixel of frame and of work image (cost grows with pixels); also the process CPU
time per frame (all threads), which other users of a shared machine do not inflate.

Geometries (all PatchCore, the default engine):
  squashed-256   preprocess.size [256, 256]: the old square input, one network input a frame
  auto-d16       size auto, calibration.min_defect_px 16 (the default): scale 0.5, 4 tiles
  auto-d8        size auto, min_defect_px 8: full resolution, 16 tiles

    python benchmarks/bench_tiling.py [--golden 12] [--test 20] [--side 900] [--engine openvino]
        [--geometries squashed-256,auto-d16,auto-d8] [--out FILE.json]

Timings are wall-clock; on a shared machine the load average at the start and end is in the JSON.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.benchmark import write_json_result  # noqa: E402
from calibration.calibrate import calibrate  # noqa: E402
from calibration.evaluation import percentiles  # noqa: E402
from calibration.golden import GoldenSet  # noqa: E402
from calibration.synthetic import make_part  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.maththreads import limit_blas_threads  # noqa: E402
from inspector.runtime import build_pipeline  # noqa: E402
from inspector.settings import RuntimeConfig, engine_config, settings_from_dict  # noqa: E402
from inspector.types import Frame  # noqa: E402

GEOMETRIES = {
    "squashed-256": {"preprocess": {"size": [256, 256]}},
    "auto-d16": {"calibration": {"min_defect_px": 16}},
    "auto-d8": {"calibration": {"min_defect_px": 8}},
}
PART = 128


def bottle_sized_frame(rng: np.random.Generator, side: int) -> np.ndarray:
    """side x side: a grid of drawn parts, cropped."""
    n = -(-side // PART)
    grid = np.vstack([np.hstack([make_part(rng, size=PART) for _ in range(n)]) for _ in range(n)])
    return np.ascontiguousarray(grid[:side, :side])


def bench_geometry(name: str, overrides: dict, golden: GoldenSet, tests: list, engine: str, work: Path) -> dict:
    data = {"calibration": {"holdout": 0.25, "min_images": 4}, "engine": {"type": engine}}
    for key, section in overrides.items():
        data[key] = {**data.get(key, {}), **section}
    settings = settings_from_dict(data, base_dir=work)
    t0 = time.perf_counter()
    cal = calibrate(settings, work / name, work / name / "bundle", progress=False, golden=golden)
    calibrate_s = time.perf_counter() - t0
    bundle = load_bundle(work / name / "bundle")
    pipeline = build_pipeline(bundle, engine_config(type=engine, max_batch=settings.engine.max_batch))
    try:
        pipeline.engine.warmup()
        for im in tests[:3]:  # first calls build kernels and buffers
            pipeline.inspect([Frame(id="w", source="bench", captured_at=datetime.now(timezone.utc), image=im)])
        stages: dict[str, list[float]] = {"inference": [], "scoring": [], "total": [], "cpu": []}
        for i, im in enumerate(tests):
            c0 = time.process_time()
            v = pipeline.inspect([Frame(id=str(i), source="bench", captured_at=datetime.now(timezone.utc), image=im)])[0]
            stages["cpu"].append((time.process_time() - c0) * 1e3)  # all threads; other users' load does not count
            for s in ("inference", "scoring", "total"):
                stages[s].append(v.timings_ms[s])
    finally:
        pipeline.engine.close()
    spec = bundle.preprocess
    grid = spec.grid
    frame_mp = tests[0].shape[0] * tests[0].shape[1] / 1e6
    work_mp = grid.work_w * grid.work_h / 1e6
    total = float(np.median(stages["total"]))
    cpu = float(np.median(stages["cpu"]))
    return {"geometry": spec.describe(), "tiles": grid.n_tiles, "work_size": list(spec.work_size),
            "min_defect_px": spec.min_defect_px, "calibrate_s": round(calibrate_s, 1),
            "bank_rows": cal.bank_size,
            "ms": {s: percentiles(v) for s, v in stages.items()},
            "ms_per_frame_megapixel": round(total / frame_mp, 2),
            "ms_per_work_megapixel": round(total / work_mp, 2),
            "cpu_ms_per_frame_megapixel": round(cpu / frame_mp, 2),
            "cpu_ms_per_work_megapixel": round(cpu / work_mp, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--golden", type=int, default=12)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--side", type=int, default=900)
    p.add_argument("--engine", default="openvino")
    p.add_argument("--geometries", default=",".join(GEOMETRIES))
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    limit_blas_threads(RuntimeConfig().blas_threads)  # score as the daemon does
    rng = np.random.default_rng(0)
    golden_images = [bottle_sized_frame(rng, args.side) for _ in range(args.golden)]
    golden = GoldenSet([f"g{i:03d}.png" for i in range(args.golden)], golden_images, [], "synthetic")
    tests = [bottle_sized_frame(rng, args.side) for _ in range(args.test)]
    load_start = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory(prefix="inspector-bench-tiling-") as tmp:
        for name in args.geometries.split(","):
            results[name] = bench_geometry(name, GEOMETRIES[name], golden, tests, args.engine, Path(tmp))
            r = results[name]
            print(f"{name:13s} {r['geometry']}: total {r['ms']['total']['median']:.1f} ms/frame "
                  f"(inference {r['ms']['inference']['median']:.1f}, scoring {r['ms']['scoring']['median']:.1f}); "
                  f"{r['ms_per_frame_megapixel']:.1f} ms per frame MP, {r['ms_per_work_megapixel']:.1f} ms per work MP; "
                  f"CPU {r['ms']['cpu']['median']:.1f} ms/frame, {r['cpu_ms_per_work_megapixel']:.1f} ms per work MP",
                  file=sys.stderr)
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}".strip(),
           "frame": f"{args.side}x{args.side}", "engine": args.engine, "golden": args.golden, "test": args.test,
           "load_average_start_end": [load_start, os.getloadavg()], "geometries": results}
    if args.out:
        write_json_result(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
