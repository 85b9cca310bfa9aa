"""Benchmark the history/stats read paths on a big SQLite database (issue 6 bar).

1. fills a SQLite file with N inspection rows (default 1,000,000; ~2% fails with one region each)
   using executemany in big transactions (seconds, not minutes);
2. runs `inspector history --format csv` (all rows) in a subprocess, output to /dev/null, and
   reads its peak RSS (ru_maxrss of the child);
3. runs `inspector stats --by hour` in a subprocess and times it (bar: < 2 s).

    python benchmarks/bench_history.py [--rows 1000000] [--db /tmp/bench-history.db] [--keep]
"""
from __future__ import annotations

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Runs one command module the way inspector.cli does (without importing every other command).
CHILD = ("import sys; sys.path.insert(0, {root!r}); import argparse, importlib; "
         "m = importlib.import_module('inspector.commands.' + sys.argv[1]); p = argparse.ArgumentParser(); "
         "m.add_arguments(p); rc = m.run(p.parse_args(sys.argv[2:])); import resource; "
         "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(rc)")


def fill(db: Path, rows: int, seed: int = 0) -> float:
    from inspector.storage import ResultStore

    if db.exists():
        db.unlink()
    s = ResultStore(str(db))
    s.ensure_schema()
    s.register_bundle("bench", "/bundles/bench", {"scorer": {"type": "memory_bank"}})
    s.close()
    rng = random.Random(seed)
    t0 = time.perf_counter()
    start = datetime(2024, 1, 1, tzinfo=timezone.utc).replace(tzinfo=None)
    step = timedelta(days=30) / rows  # a month of production
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA journal_mode=WAL")
    ins = ("INSERT INTO inspections (id, frame_key, source, origin_name, captured_at, recorded_at, verdict, "
           "score, threshold, error_reason, inference_ms, total_ms, heatmap_path, stored_path, bundle_id, "
           "image_w, image_h, region_count) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    reg = "INSERT INTO defect_regions (inspection_id, x, y, w, h, area, peak_score) VALUES (?,?,?,?,?,?,?)"
    batch, regions = [], []
    for i in range(1, rows + 1):
        at = start + step * i
        u = rng.random()
        verdict = "fail" if u < 0.02 else ("error" if u < 0.025 else "pass")
        score = None if verdict == "error" else (0.6 + rng.random() * 0.4 if verdict == "fail" else rng.random() * 0.5)
        ts = at.strftime("%Y-%m-%d %H:%M:%S.%f")
        batch.append((i, f"cam{i % 4}/{i}.png:1000:{i}", f"cam{i % 4}", f"{i}.png", ts, ts, verdict, score, 0.55,
                      "decode failed" if verdict == "error" else None, 8.0, 12.0,
                      f"/var/lib/inspector/heatmaps/{i}.png" if verdict == "fail" else None,
                      f"/var/lib/inspector/done/{i}.png", "bench", 1280, 960, 1 if verdict == "fail" else 0))
        if verdict == "fail":
            regions.append((i, rng.randrange(1200), rng.randrange(900), 40, 30, 900, score))
        if len(batch) == 50_000:
            con.executemany(ins, batch)
            con.executemany(reg, regions)
            con.commit()
            batch, regions = [], []
    if batch:
        con.executemany(ins, batch)
        con.executemany(reg, regions)
        con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    con.close()
    return time.perf_counter() - t0


def run_child(args: list[str], stdout) -> tuple[float, int, int]:
    """(wall seconds, peak RSS in MiB of the child, exit code)."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT))] + args, stdout=stdout,
                       stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {r.stderr}")
    # the child reports its own ru_maxrss (RUSAGE_CHILDREN would be the max over all children)
    peak_kb = int(r.stderr.rsplit("MAXRSS_KB", 1)[1].split()[0])
    return wall, peak_kb // 1024, r.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/bench-history.db"))
    ap.add_argument("--reuse", action="store_true", help="use an existing --db as is")
    ap.add_argument("--keep", action="store_true", help="keep the database file afterwards")
    a = ap.parse_args()
    if not (a.reuse and a.db.exists()):
        secs = fill(a.db, a.rows)
        print(f"filled {a.rows:,} rows in {secs:.1f} s ({a.db.stat().st_size / 1e6:.0f} MB)")
    baseline_wall, baseline_rss, _ = run_child(["history", "--db", str(a.db), "--limit", "1"], subprocess.DEVNULL)
    print(f"baseline `history --limit 1`: {baseline_wall:.2f} s, peak RSS {baseline_rss} MiB")
    t_stats = []
    for _ in range(3):
        wall, stats_rss, _ = run_child(["stats", "--db", str(a.db), "--by", "hour"], subprocess.DEVNULL)
        t_stats.append(wall)
    print(f"`stats --by hour` over {a.rows:,} rows: best {min(t_stats):.2f} s, runs "
          + ", ".join(f"{t:.2f}" for t in t_stats) + f" s (bar: < 2 s, includes interpreter start); "
          f"peak RSS {stats_rss} MiB")
    with open(os.devnull, "w") as devnull:
        wall, rss, _ = run_child(["history", "--db", str(a.db), "--format", "csv"], devnull)
    print(f"`history --format csv` (all {a.rows:,} rows): {wall:.1f} s, peak RSS {rss} MiB")
    if not a.keep and not a.reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(str(a.db) + suffix).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
