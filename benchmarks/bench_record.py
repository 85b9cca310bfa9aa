"""Time the writer: ``ResultStore.record`` of N verdicts, one per transaction, into a fresh SQLite
file (4 sources, 2% fails, 2 s apart). Prints the median and mean ms per frame.

    python benchmarks/bench_record.py [--frames 3000]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from inspector.storage import ResultStore  # noqa: E402
from tests.db_fixtures import T0, make_verdict  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=3000)
    n = ap.parse_args().frames
    with tempfile.TemporaryDirectory() as d:
        s = ResultStore(os.path.join(d, "record.db"))
        s.ensure_schema()
        vs = [make_verdict(kind="fail" if i % 50 == 0 else "pass", source=f"cam{i % 4}",
                           at=T0 + timedelta(seconds=2 * i), name=f"p{i}.png") for i in range(n)]
        times = []
        for i, v in enumerate(vs):
            t = time.perf_counter()
            s.record(v, frame_key=f"k{i}", heatmap_path=None)
            times.append(time.perf_counter() - t)
        s.close()
    print(f"record(): median {statistics.median(times) * 1000:.3f} ms, mean {statistics.mean(times) * 1000:.3f} ms "
          f"over {n} frames (load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
