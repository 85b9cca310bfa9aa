"""Folder-mode throughput of the real daemon vs the single-frame pipeline (issue 5 bar: the
daemon's sustained rate over 1000 frames is within 90% of the single-frame rate).

1. a bundle: --bundle, else calibrated here (on DATASET/train/good with --dataset, else on
   synthetic golden parts at --size);
2. (a) single-frame pipeline throughput, in this process: read + decode the file and
   ``pipeline.inspect([frame])``, one frame at a time, like ``inspector bench``;
3. (b) the real daemon (``python -m inspector run``) on a fresh inbox: --frames files, staged
   beforehand on the same filesystem, are renamed into the inbox all at once (or at --rate
   per second), each stamped with the time it is dropped (its mtime, as if the camera had just
   written it); the rate is frames/s between the first and the last row recorded (the
   database's recorded_at), and the file-appears -> row-committed latency (median, p95) is the
   one the daemon logs for each frame once its transaction has committed (mtime to commit);
4. prints both rates and their ratio (--json writes them; --min-ratio makes a miss exit 1).

All frames dropped at once measure capacity; their latency is mostly waiting in the inbox. A
--rate under capacity gives the latency a line would see.

    python benchmarks/bench_throughput.py [--frames 1000] [--size 256] [--dataset DIR] [--bundle B]
        [--rate 0] [--max-batch 4] [--threads 0] [--engine TYPE] [--precision auto|fp32|bf16]
        [--json OUT] [--keep DIR]

Wall times depend on what else the machine is doing: the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.benchmark import write_json_result  # noqa: E402
from calibration.golden import IMAGE_SUFFIXES  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=1000, help="frames through the daemon (default 1000)")
    p.add_argument("--single-frames", type=int, default=None,
                   help="frames for the single-frame measurement (default: min(--frames, 300))")
    p.add_argument("--size", type=int, default=256, help="network input side when calibrating (default 256)")
    p.add_argument("--dataset", type=Path, help="real images: an MVTec-layout folder (test/*/* are the frames, "
                   "train/good calibrates) or any folder of images; repeated up to --frames")
    p.add_argument("--bundle", type=Path, help="use this bundle instead of calibrating")
    p.add_argument("--golden", type=int, default=30, help="synthetic golden parts to calibrate on (no --dataset)")
    p.add_argument("--train-limit", type=int, default=None, help="calibrate on the first N train/good images")
    p.add_argument("--defect-share", type=float, default=0.05,
                   help="share of synthetic frames with a defect (default 0.05, a bad day on a line; fails "
                        "cost a heatmap each)")
    p.add_argument("--rate", type=float, default=0.0, help="drop frames at this many per second (0: all at once)")
    p.add_argument("--max-batch", type=int, default=4, help="engine.max_batch for the daemon (default 4)")
    p.add_argument("--engine", default=None, choices=["onnxruntime", "openvino", "torch"],
                   help="engine.type for calibration and both runs (default: the config default, openvino)")
    p.add_argument("--precision", default=None, choices=["auto", "fp32", "bf16"],
                   help="openvino precision (default auto: bf16 where the CPU has it)")
    p.add_argument("--threads", type=int, default=0, help="engine threads, both runs (0: the engine picks, all cores)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    p.add_argument("--min-ratio", type=float, default=None, help="exit 1 if daemon/single is below this")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- inputs
def frame_sources(args) -> list[Path]:
    """Image files to feed (repeated as needed); empty: synthesise parts."""
    if args.dataset is None:
        return []
    d = args.dataset
    root = d / "test" if (d / "test").is_dir() else d
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise SystemExit(f"--dataset {d}: no images under {root}")
    return files


def synthetic_frames(n: int, size: int, defect_share: float, seed: int = 11) -> list[bytes]:
    """n encoded PNGs of synthetic parts, ``defect_share`` of them with a defect (fails get heatmaps)."""
    import cv2

    from calibration.synthetic import DEFECTS, make_part

    rng = np.random.default_rng(seed)
    distinct = min(n, 200)  # encoded once, reused under new names
    out = []
    for i in range(distinct):
        defect = DEFECTS[i % len(DEFECTS)] if rng.random() < defect_share else None
        out.append(cv2.imencode(".png", make_part(rng, size=size, defect=defect))[1].tobytes())
    return [out[i % distinct] for i in range(n)]


def frame_bytes(args, n: int) -> list[tuple[str, bytes]]:
    files = frame_sources(args)
    if files:
        cache = {p: p.read_bytes() for p in files}
        return [(f"f{i:05d}-{files[i % len(files)].parent.name}-{files[i % len(files)].name}",
                 cache[files[i % len(files)]]) for i in range(n)]
    return [(f"f{i:05d}.png", b) for i, b in enumerate(synthetic_frames(n, args.size, args.defect_share))]


def engine_section(args) -> dict:
    """The engine config section that calibration, the single-frame run and the daemon all use."""
    section = {"max_batch": args.max_batch, "threads": args.threads}
    if args.engine:
        section["type"] = args.engine
    if args.precision:
        section["precision"] = args.precision
    return section


def make_bundle(args, work: Path) -> Path:
    if args.bundle:
        return args.bundle.resolve()
    from calibration.calibrate import calibrate
    from inspector.settings import settings_from_dict

    settings = settings_from_dict({"preprocess": {"size": [args.size, args.size]}, "engine": engine_section(args)},
                                  base_dir=work)
    out = work / "bundle"
    if args.dataset is not None and (args.dataset / "train" / "good").is_dir():
        golden_dir = args.dataset / "train" / "good"
        golden = None
        if args.train_limit:
            from calibration.golden import read_golden

            g = read_golden(golden_dir, max_pixels=settings.preprocess.max_pixels)
            golden = g.first(args.train_limit)
        print(f"calibrating on {golden_dir} ...", flush=True)
        calibrate(settings, golden_dir, out, progress=False, golden=golden)
    else:
        import cv2

        from calibration.synthetic import make_part

        golden_dir = work / "golden"
        golden_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(3)
        for i in range(args.golden):
            cv2.imwrite(str(golden_dir / f"g{i:03d}.png"), make_part(rng, size=args.size))
        print(f"calibrating on {args.golden} synthetic golden parts at {args.size}x{args.size} ...", flush=True)
        calibrate(settings, golden_dir, out, progress=False)
    return out


# ---------------------------------------------------------------------------- (a) single frame
def single_frame_rate(bundle: Path, staged: list[Path], args) -> dict:
    """Frames/s of read + decode + pipeline.inspect([frame]), one at a time (like `inspector bench`)."""
    from inspector.bundle import load_bundle
    from inspector.decode import read_image_file
    from inspector.runtime import build_pipeline
    from inspector.maththreads import limit_blas_threads
    from inspector.settings import RuntimeConfig, engine_config
    from inspector.types import Frame

    b = load_bundle(bundle)
    limit_blas_threads(RuntimeConfig().blas_threads)  # as the daemon does
    pipeline = build_pipeline(b, engine_config(**engine_section(args)))
    pipeline.engine.warmup()
    n = args.single_frames or min(len(staged), 300)
    for p in staged[:5]:  # warm caches (first calls allocate)
        pipeline.inspect([Frame(id="w", source="bench", captured_at=datetime.now(timezone.utc),
                                image=read_image_file(str(p), max_pixels=100_000_000))])
    t0 = time.perf_counter()
    for i in range(n):
        p = staged[i % len(staged)]
        t = time.perf_counter()
        img = read_image_file(str(p), max_pixels=100_000_000)
        f = Frame(id=str(i), source="bench", captured_at=datetime.now(timezone.utc), image=img, origin_path=str(p),
                  decode_ms=(time.perf_counter() - t) * 1000.0)
        pipeline.inspect([f])
    wall = time.perf_counter() - t0
    pipeline.engine.close()
    return {"frames": n, "seconds": round(wall, 3), "fps": round(n / wall, 2)}


# ---------------------------------------------------------------------------- (b) daemon
def write_config(work: Path, bundle: Path, args) -> Path:
    import yaml

    (work / "inbox").mkdir(parents=True, exist_ok=True)
    cfg = {
        "bundle": str(bundle),
        "database": {"url": f"sqlite:///{work / 'inspector.db'}"},
        "sources": [{"type": "folder", "name": "bench", "inbox": str(work / "inbox")}],
        "output": {"done_dir": str(work / "done"), "quarantine_dir": str(work / "quarantine"),
                   "heatmap_dir": str(work / "heatmaps"), "layout": "per_verdict"},
        "engine": engine_section(args),
        "logging": {"level": "INFO"},  # as deployed: one line per frame (and the "ready" line we wait for)
    }
    path = work / "inspector.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


_LOGGED_LATENCY = re.compile(r"'([^']+)' (?:pass|fail) score=.*\(file to row ([0-9.]+)ms\)")


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT count(*) FROM inspections").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def daemon_rate(bundle: Path, staged: list[Path], work: Path, args) -> dict:
    config = write_config(work, bundle, args)
    inbox, db = work / "inbox", work / "inspector.db"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NOTIFY_SOCKET", None)
    log_path = work / "daemon.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(config)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while "inspector.service: ready:" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"daemon did not start; see {log_path}")
            time.sleep(0.05)
        appeared: dict[str, float] = {}
        t_first = time.time()
        for i, p in enumerate(staged):
            if args.rate > 0:
                due = t_first + i / args.rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
            # written just now, as by a camera: the daemon's latency runs from the mtime. An explicit
            # time, because the kernel stamps files from a coarse clock (up to a tick, ~4 ms, behind)
            now_ns = time.time_ns()
            os.utime(p, ns=(now_ns, now_ns))
            appeared[p.name] = now_ns / 1e9
            os.replace(p, inbox / p.name)  # same filesystem: the file appears whole
        n = len(staged)
        deadline = time.monotonic() + max(600.0, n * 2.0)
        while _count(db) < n:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"daemon stopped or stalled at {_count(db)}/{n} rows; see {log_path}")
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    recs = con.execute("SELECT origin_name, recorded_at, verdict FROM inspections ORDER BY id").fetchall()
    stage_rows = con.execute("SELECT decode_ms, preprocess_ms, inference_ms, scoring_ms, total_ms FROM inspections "
                             "WHERE verdict != 'error'").fetchall()
    con.close()
    # the daemon's own per-stage timings (median ms); "total" is decode to verdict, without the
    # pick-up, the queues, the commit and the move that the latency also counts
    stages_ms = {name: round(float(np.median([r[i] for r in stage_rows if r[i] is not None])), 2)
                 for i, name in enumerate(("decode", "preprocess", "inference", "scoring", "total"))} \
        if stage_rows else {}

    def epoch(s: str) -> float:  # naive UTC text, as the store writes it
        return datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp()

    committed = sorted(epoch(r[1]) for r in recs)
    # after the commit the daemon logs "(file to row N ms)": the file's mtime to the committed row
    logged = {m.group(1): float(m.group(2)) / 1000.0 for m in _LOGGED_LATENCY.finditer(log_path.read_text())}
    latencies = sorted(logged[r[0]] for r in recs if r[0] in appeared and r[0] in logged)
    if not latencies:
        raise SystemExit(f"no 'file to row' latencies in {log_path}")
    span = committed[-1] - committed[0]
    verdicts = {k: sum(1 for r in recs if r[2] == k) for k in ("pass", "fail", "error")}

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000.0, 1)

    return {"frames": len(recs), "exit_code": rc, "seconds_first_to_last_commit": round(span, 3),
            "fps": round((len(recs) - 1) / span, 2) if span > 0 else None,
            "latency_ms_p50": pct(0.5), "latency_ms_p95": pct(0.95), "stage_ms_median": stages_ms,
            "verdicts": verdicts,
            "drop_rate": args.rate or "all at once"}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.frames < 2:
        raise SystemExit("--frames must be at least 2")
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    if (work / "inspector.db").exists():
        # its rows would be counted with this run's (a stale result, not an error, otherwise)
        raise SystemExit(f"{work} holds a results database from an earlier run; --keep needs a new folder")
    work.mkdir(parents=True, exist_ok=True)
    try:
        print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f}, {os.cpu_count()} CPUs; work {work}",
              flush=True)
        bundle = make_bundle(args, work)
        stage = work / "staging"  # same filesystem as the inbox: os.replace is an atomic rename
        stage.mkdir(parents=True, exist_ok=True)
        staged = []
        for name, data in frame_bytes(args, args.frames):
            (stage / name).write_bytes(data)
            staged.append(stage / name)
        print(f"(a) single-frame pipeline on {min(len(staged), args.single_frames or 300)} frames ...", flush=True)
        single = single_frame_rate(bundle, staged, args)
        print(f"    {single['fps']:.1f} frames/s", flush=True)
        print(f"(b) daemon, {len(staged)} frames into the inbox "
              f"({'all at once' if not args.rate else f'{args.rate}/s'}) ...", flush=True)
        daemon = daemon_rate(bundle, staged, work, args)
        ratio = daemon["fps"] / single["fps"] if daemon["fps"] else 0.0
        result = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                  "loadavg": [round(x, 2) for x in os.getloadavg()], "bundle": str(bundle),
                  "dataset": str(args.dataset) if args.dataset else f"synthetic {args.size}x{args.size}",
                  "engine": engine_section(args),
                  "single_frame": single, "daemon": daemon, "ratio": round(ratio, 3)}
        print(f"\nsingle-frame pipeline  {single['fps']:8.1f} frames/s   ({single['frames']} frames, decode included)")
        print(f"daemon, folder mode    {daemon['fps']:8.1f} frames/s   ({daemon['frames']} frames, first to last "
              f"commit {daemon['seconds_first_to_last_commit']:.1f}s; verdicts {daemon['verdicts']})")
        print(f"file appears -> row committed: median {daemon['latency_ms_p50']:.1f} ms, "
              f"p95 {daemon['latency_ms_p95']:.1f} ms")
        st = daemon["stage_ms_median"]
        if st:
            print("in the daemon, median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in st.items())
                  + f"; inference is {st['inference'] / daemon['latency_ms_p50']:.0%} of the median latency")
        print(f"ratio daemon / single  {ratio:.2f}   (issue 5 bar: >= 0.90)")
        if args.json:
            write_json_result(args.json, result)
        if args.min_ratio is not None and ratio < args.min_ratio:
            return 1
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
