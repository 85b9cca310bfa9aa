"""Benchmark the console's pages on a big SQLite database (issue 15 bar: each page < 300 ms).

1. fills a SQLite file with N inspection rows (benchmarks/bench_history.py's ``fill``: default
   1,000,000 over a month, 4 sources, ~2% fails with one region each) plus 1,000 reviews;
2. starts the real server (`inspector serve --db ... --listen 127.0.0.1:PORT`) in a subprocess;
3. requests each page over HTTP: one warm-up, then the median and the worst of ``--repeat``
   requests (wall time at the client: the whole response body read).

    python benchmarks/bench_console.py [--rows 1000000] [--db /tmp/bench-console.db] [--reuse] [--json out.json]
    python benchmarks/bench_console.py --postgres   # the same rows copied into a throwaway PostgreSQL
                                                    # (tests/db_fixtures.PostgresServer: initdb + pg_ctl)
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_history import fill  # noqa: E402


def add_reviews(db: Path, n: int = 1000, seed: int = 1) -> None:
    con = sqlite3.connect(db)
    fails = [r[0] for r in con.execute("SELECT id FROM inspections WHERE verdict = 'fail' ORDER BY id")]
    rng = random.Random(seed)
    rows = [(i, rng.choice(("confirmed_defect", "false_reject")), "scratch", None, "bench",
             "2024-01-31 12:00:00.000000") for i in rng.sample(fails, min(n, len(fails)))]
    con.executemany("INSERT INTO reviews (inspection_id, kind, defect_type, note, reviewer, created_at) "
                    "VALUES (?,?,?,?,?,?)", rows)
    con.commit()
    con.execute("ANALYZE")
    con.close()


def copy_to_postgres(db: Path, url: str) -> float:
    """The SQLite file's rows, table by table, into a fresh PostgreSQL database (COPY), then
    VACUUM ANALYZE (index-only scans need the visibility map)."""
    import psycopg

    from inspector.storage import ResultStore

    s = ResultStore(url)
    s.ensure_schema()
    s.close()
    t0 = time.perf_counter()
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("model_bundles", "inspections", "defect_regions", "reviews", "yield_hours"):
            cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
            with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                for row in src.execute(f"SELECT {', '.join(cols)} FROM {table}"):
                    cp.write_row(row)
        for table in ("inspections", "defect_regions", "reviews"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        conn.execute("VACUUM ANALYZE")
    src.close()
    return time.perf_counter() - t0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[float, int, int]:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as r:
        body = r.read()
        status = r.status
    return time.perf_counter() - t, status, len(body)


def pages(db: Path) -> list[tuple[str, str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    n = con.execute("SELECT MAX(id) FROM inspections").fetchone()[0]
    mid = con.execute("SELECT captured_at, id FROM inspections WHERE id = ?", (n // 2,)).fetchone()
    fail_mid = con.execute("SELECT id FROM inspections WHERE verdict = 'fail' AND id > ? LIMIT 1", (n // 2,)).fetchone()[0]
    con.close()
    at = mid[0].replace("-", "").replace(" ", "T").replace(":", "")
    cursor = f"{at}_{mid[1]}"
    return [
        ("live", "/"),
        ("live cards (each SSE update)", "/live/cards"),
        ("history, newest page", "/history"),
        ("history, page in the middle (keyset)", f"/history?after={cursor}"),
        ("history, fails", "/history?verdict=fail"),
        ("history, one source, a day", "/history?source=cam2&since=2024-01-15T00:00&until=2024-01-16T00:00"),
        ("history, fails of one source, middle", f"/history?verdict=fail&source=cam1&after={cursor}"),
        ("history, score >= 0.95", "/history?min_score=0.95"),
        ("history, region >= 500 px", "/history?region_area_min=500"),
        ("history, reviewed as false reject", "/history?review=false_reject"),
        ("history, not reviewed, fails", "/history?review=unreviewed&verdict=fail"),
        ("detail (fail, regions, neighbours, reviews)", f"/inspection/{fail_mid}"),
        # {k}: each request another period, so the console's 30 s cache of yield pages never answers
        ("yield, one day by hour", "/yield?since=2024-01-{k:02d}T00:00&until=2024-01-{k1:02d}T00:00"),
        ("yield, one week by day", "/yield?since=2024-01-{k:02d}T00:00&until=2024-01-{k7:02d}T00:00&by=day"),
        ("yield density picture, one day", "/yield/density.png?since=2024-01-{k:02d}T00:00&until=2024-01-{k1:02d}T00:00"),
        ("yield, whole month by day (1M rows)", "/yield?since=2023-12-31T00:{k:02d}&by=day"),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", type=Path, default=Path("/tmp/bench-console.db"))
    ap.add_argument("--reuse", action="store_true", help="use the --db left by an earlier run")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--postgres", action="store_true", help="serve the rows from a throwaway PostgreSQL server")
    args = ap.parse_args()
    if not (args.reuse and args.db.exists()):
        print(f"filling {args.db} with {args.rows} rows ...", flush=True)
        print(f"  {fill(args.db, args.rows):.1f} s", flush=True)
        add_reviews(args.db)
    pg = None
    db_arg = str(args.db)
    if args.postgres:
        from tests.db_fixtures import PostgresServer, _pg_bindir

        pg = PostgresServer(_pg_bindir())
        pg.start()
        db_arg = pg.new_database()
        print(f"copied into PostgreSQL in {copy_to_postgres(args.db, db_arg):.1f} s", flush=True)
    try:
        return serve_and_time(args, db_arg)
    finally:
        if pg is not None:
            pg.stop()


def serve_and_time(args, db_arg: str) -> int:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "inspector", "serve", "--db", db_arg,
                               "--listen", f"127.0.0.1:{port}", "--status-file", "/nonexistent/status.json"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    results = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/static/console.css")
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("server did not start: " + server.stderr.read().decode()[-2000:])
                time.sleep(0.2)
        print(f"load average {os.getloadavg()[0]:.2f}; {args.repeat} requests per page after one warm-up")
        print(f"{'page':<46} {'median ms':>10} {'worst ms':>9} {'KiB':>6}")
        for name, path in pages(args.db):
            get(base + path.format(k=1, k1=2, k7=8))
            times, size = [], 0
            for k in range(2, args.repeat + 2):
                t, status, size = get(base + path.format(k=k, k1=k + 1, k7=k + 7))
                assert status == 200, (path, status)
                times.append(t * 1000)
            med, worst = statistics.median(times), max(times)
            results.append({"page": name, "path": path, "median_ms": round(med, 1), "worst_ms": round(worst, 1),
                            "bytes": size})
            print(f"{name:<46} {med:>10.1f} {worst:>9.1f} {size / 1024:>6.1f}", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "database": "postgresql" if args.postgres else "sqlite",
                                         "load_avg": os.getloadavg()[0], "pages": results},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
