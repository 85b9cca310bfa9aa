"""How often the budget threshold's tail models reject new good parts, on the demo's synthetic
parts with the default config: calibrate on N golden parts (without the refit, so the held-out
scores and the scored parts come from one model), score M new good parts, then draw held-out
sets of k scores from them many times and measure the share of the rest above each model's
(1-b) quantile (docs/BENCHMARKS.md, "the budget threshold's tail model").

    python benchmarks/probe_tail_model.py [--golden 200] [--parts 1500] [--budget 0.01]
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.calibrate import calibrate  # noqa: E402
from calibration.synthetic import make_part  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.runtime import build_pipeline  # noqa: E402
from inspector.settings import load_settings  # noqa: E402
from inspector.types import Frame  # noqa: E402


def normal_q(s, b):  # what calibration/thresholds.py fits to scores that can be negative
    return max(NormalDist(s.mean(), s.std(ddof=1)).inv_cdf(1 - b), np.quantile(s, 1 - b))


def exponential_q(s, b):  # an exponential tail over the median (peaks over threshold, shape 0)
    m = np.median(s)
    return max(m + (s[s > m] - m).mean() * math.log(0.5 / b), np.quantile(s, 1 - b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--golden", type=int, default=200)
    ap.add_argument("--parts", type=int, default=1500)
    ap.add_argument("--budget", type=float, default=0.01)
    ap.add_argument("--draws", type=int, default=400)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="probe-tail-"))
    (root / "g").mkdir()
    rng = np.random.default_rng(7)
    for i in range(a.golden):
        cv2.imwrite(str(root / "g" / f"golden-{i:03d}.png"), make_part(rng))
    (root / "c.yaml").write_text("calibration: {refit_on_all: false}\n")
    settings = load_settings(root / "c.yaml")
    calibrate(settings, root / "g", root / "b")
    pipeline = build_pipeline(load_bundle(root / "b"), settings.engine)
    rng = np.random.default_rng(12345)
    now = datetime.now(timezone.utc)
    pool = np.array([pipeline.inspect([Frame(id=str(i), source="p", captured_at=now, image=make_part(rng))])[0].score
                     for i in range(a.parts)])
    pipeline.engine.close()
    print(f"{a.parts} new good parts: true Q{1 - a.budget:g} {np.quantile(pool, 1 - a.budget):.2f}")
    draw = np.random.default_rng(0)
    for k in (10, 20, 40, 80):
        row = []
        for name, q in (("normal", normal_q), ("exponential", exponential_q)):
            frr = []
            for _ in range(a.draws):
                order = draw.permutation(len(pool))
                frr.append(float((pool[order[k:]] > q(pool[order[:k]], a.budget)).mean()))
            row.append(f"{name} mean {100 * np.mean(frr):.1f}% p90 {100 * np.quantile(frr, 0.9):.1f}%")
        print(f"k={k:3d} held out: " + "; ".join(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
