"""A complete run on synthetic parts, with nothing of yours needed.

Draws golden parts with OpenCV, calibrates a bundle on them, writes a config, starts the real
daemon (`inspector run`) on an inbox, drops new parts into it (some with scratches, spots or a
missing hole; written under a temporary name and renamed in, as a camera should), waits until
every frame is recorded, stops the daemon with SIGTERM and prints the history with the
heatmap paths. Everything lands in --dir (default ./inspector-demo).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from inspector.errors import InspectorError

CONFIG = """\
# Written by `inspector demo`. Relative paths are relative to this file.
bundle: bundle
database:
  url: sqlite:///inspector.db
sources:
  - type: folder
    name: demo-line
    inbox: inbox
output:
  done_dir: done
  quarantine_dir: quarantine
  heatmap_dir: heatmaps
  layout: per_verdict
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=Path("inspector-demo"), help="working folder (default ./inspector-demo)")
    p.add_argument("--golden", type=int, default=100, help="number of golden parts to calibrate on")
    p.add_argument("--parts", type=int, default=12, help="number of new parts to inspect (about half defective)")
    p.add_argument("--seed", type=int, default=7)


def run(args: argparse.Namespace) -> int:
    import cv2
    import numpy as np

    from calibration.calibrate import calibrate
    from calibration.summary import print_summary, write_report
    from calibration.synthetic import DEFECTS, make_part
    from inspector.settings import load_settings

    root = args.dir.resolve()
    if (root / "inspector.db").exists():
        raise InspectorError(f"demo folder {root} was used before; remove it or pass --dir NEW")
    for sub in ("golden", "inbox"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    print(f"1/4 drawing {args.golden} golden parts in {root / 'golden'}")
    for i in range(args.golden):
        cv2.imwrite(str(root / "golden" / f"golden-{i:03d}.png"), make_part(rng))
    (root / "inspector.yaml").write_text(CONFIG)
    settings = load_settings(root / "inspector.yaml")
    print("2/4 calibrating")
    result = calibrate(settings, root / "golden", root / "bundle")
    print_summary(result, write_report(result, settings, None))

    print("3/4 starting the daemon and dropping parts into the inbox")
    log_path = root / "daemon.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(root / "inspector.yaml")],
                                  stderr=log, stdout=log)
    try:
        expected = []
        for i in range(args.parts):
            defect = DEFECTS[i % len(DEFECTS)] if i % 2 else None
            name = f"part-{i:03d}-{defect or 'good'}.png"
            tmp = root / "inbox" / f".{name}.tmp"
            tmp.write_bytes(cv2.imencode(".png", make_part(rng, defect=defect))[1].tobytes())
            os.replace(tmp, root / "inbox" / name)  # a camera's write-then-rename
            expected.append(name)
        (root / "inbox" / "part-corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a bad frame
        expected.append("part-corrupt.png")
        deadline = time.monotonic() + 300
        while any((root / "inbox" / n).exists() for n in expected):
            if daemon.poll() is not None:
                raise InspectorError(f"the daemon exited early (code {daemon.returncode}); see {log_path}")
            if time.monotonic() > deadline:
                raise InspectorError(f"frames not processed within 5 minutes; see {log_path}")
            time.sleep(0.2)
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    print(f"    daemon stopped cleanly (exit {daemon.returncode}); its log: {log_path}")
    print("4/4 history")
    from inspector.cli import main as cli_main

    cli_main(["history", "--config", str(root / "inspector.yaml"), "--limit", str(args.parts + 5)])
    print(f"\nheatmaps of the fails: {root / 'heatmaps'}\nframes: {root / 'done'} (pass/, fail/), "
          f"bad files: {root / 'quarantine'}\ncalibration report: {root / 'bundle' / 'report.html'}\n"
          f"try: inspector show 1 --config {root / 'inspector.yaml'}")
    return 0
