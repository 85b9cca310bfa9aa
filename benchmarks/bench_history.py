"""Benchmark the history/stats read paths on a big SQLite database (issue 6 bar).

1. fills a SQLite file with N inspection rows (default 1,000,000; ~2% fails with one region each)
   using executemany in big transactions (seconds, not minutes);
2. runs `inspector stats --by hour` three times in a subprocess, through the real CLI
   (`inspector.cli.main`: interpreter start and imports included), and times it (bar: < 2 s);
3. runs `inspector history --format csv` (all rows) in a subprocess, output to /dev/null, and
   reads its peak RSS (ru_maxrss of the child).

Wall times depend on what else the machine is doing: the load average is printed, and each
child's CPU time (user + sys) next to its wall time.

    python benchmarks/bench_history.py [--rows 1000000] [--db /tmp/bench-history.db] [--keep | --reuse]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The real console script (inspector.cli imports only the command it runs), plus its peak RSS.
CHILD = ("import sys; sys.path.insert(0, {root!r}); from inspector.cli import main; rc = main(sys.argv[1:]); "
         "import resource; print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); "
         "sys.exit(rc)")


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
    # the per-hour counts the daemon's writer keeps with its rows (inspector/storage/rollup.py),
    # built as migration 5 backfills them
    con.execute("DELETE FROM yield_hours")
    con.execute("INSERT INTO yield_hours (hour, source, verdict, count) SELECT substr(captured_at, 1, 13) || "
                "':00:00.000000' AS h, source, verdict, COUNT(*) FROM inspections GROUP BY h, source, verdict")
    con.commit()
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.execute("ANALYZE")
    con.close()
    return time.perf_counter() - t0


def run_child(args: list[str], stdout) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds (user + sys), peak RSS in MiB) of one child."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT))] + args, stdout=stdout,
                       stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if r.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {r.stderr}")
    # the child reports its own ru_maxrss (RUSAGE_CHILDREN would be the max over all children)
    peak_kb = int(r.stderr.rsplit("MAXRSS_KB", 1)[1].split()[0])
    return wall, cpu, peak_kb // 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/bench-history.db"))
    ap.add_argument("--reuse", action="store_true", help="use an existing --db as is")
    ap.add_argument("--keep", action="store_true", help="keep the database file afterwards")
    a = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    if not (a.reuse and a.db.exists()):
        secs = fill(a.db, a.rows)
        print(f"filled {a.rows:,} rows in {secs:.1f} s ({a.db.stat().st_size / 1e6:.0f} MB)")
    wall, cpu, rss = run_child(["history", "--db", str(a.db), "--limit", "1"], subprocess.DEVNULL)
    print(f"baseline `history --limit 1`: {wall:.2f} s (cpu {cpu:.2f} s), peak RSS {rss} MiB")
    runs = [run_child(["stats", "--db", str(a.db), "--by", "hour"], subprocess.DEVNULL) for _ in range(3)]
    print(f"`stats --by hour` over {a.rows:,} rows: best {min(w for w, _, _ in runs):.2f} s, runs "
          + ", ".join(f"{w:.2f} (cpu {c:.2f})" for w, c, _ in runs)
          + f" s (bar: < 2 s, includes interpreter start); peak RSS {max(r for _, _, r in runs)} MiB")
    with open(os.devnull, "w") as devnull:
        wall, cpu, rss = run_child(["history", "--db", str(a.db), "--format", "csv"], devnull)
    print(f"`history --format csv` (all {a.rows:,} rows): {wall:.1f} s (cpu {cpu:.1f} s), peak RSS {rss} MiB")
    print(f"load average {os.getloadavg()[0]:.2f}")
    if not a.keep and not a.reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(str(a.db) + suffix).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
