"""Make the README's console screenshots (docs/console/live.png, detail.png, yield.png).

Builds a demo database (three sources over the last 12 hours, synthetic parts from
calibration.synthetic, a few fails with heatmaps and reviews, a status file in which one
source is reconnecting), serves it with the console on a thread and photographs the pages in
headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

    python docs/console/screenshots.py [--out docs/console]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SOURCES = ("line1-top", "line1-side", "line2")


def heatmap(frame: np.ndarray, cx: int, cy: int, r: int) -> np.ndarray:
    h, w = frame.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * r * r))
    colour = cv2.applyColorMap((blob * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (np.clip(blob * 1.4, 0, 0.75))[..., None]
    out = (frame * (1 - alpha) + colour * alpha).astype(np.uint8)
    cv2.rectangle(out, (cx - r, cy - r), (cx + r, cy + r), (0, 0, 255), 2)
    return out


def build(root: Path) -> str:
    from calibration.synthetic import make_part
    from inspector.storage import ResultStore
    from inspector.storage.reviews import record_review
    from inspector.types import Frame, Region, Verdict, VerdictKind

    done, heat = root / "done", root / "heatmaps"
    done.mkdir()
    heat.mkdir()
    url = f"sqlite:///{root / 'demo.db'}"
    store = ResultStore(url)
    store.ensure_schema()
    store.register_bundle("b-2024-05", "/var/lib/inspector/bundle", {"scorer": {"type": "patchcore"}})
    rng = np.random.default_rng(3)
    now = datetime.now(timezone.utc).replace(microsecond=0)
    fails = []
    n = 0
    for minute in range(12 * 60, 0, -3):
        for s, src in enumerate(SOURCES):
            n += 1
            at = now - timedelta(minutes=minute, seconds=20 * s)
            hour = at.hour
            p_fail = 0.04 + (0.08 if (src == "line2" and hour % 5 == 0) else 0.0)
            fail = rng.random() < p_fail
            defect = rng.choice(["scratch", "spot", "missing_hole"]) if fail else None
            img = make_part(rng, size=256, defect=defect)
            path = done / f"{src}-{n}.png"
            cv2.imwrite(str(path), img)
            regions, hpath = (), None
            score = float(rng.normal(14, 2.5))
            if fail:
                score = float(rng.uniform(24, 40))
                cx, cy, r = int(rng.integers(70, 190)), int(rng.integers(70, 190)), int(rng.integers(12, 26))
                regions = (Region(cx - r, cy - r, 2 * r, 2 * r, 4 * r * r, score),)
                hpath = heat / f"{src}-{n}.png"
                cv2.imwrite(str(hpath), heatmap(img, cx, cy, r))
            frame = Frame(id=f"{src}:{n}", source=src, captured_at=at, image=img, origin_path=f"/inbox/{src}/{n}.png",
                          key=None)
            v = Verdict(frame=frame, kind=VerdictKind.FAIL if fail else VerdictKind.PASS, score=score, threshold=22.9,
                        regions=regions, bundle_id="b-2024-05", timings_ms={"total": 41.0, "inference": 25.0})
            iid = store.record(v, frame_key=f"{src}-{n}", heatmap_path=str(hpath) if hpath else None,
                               stored_path=str(path))
            if fail:
                fails.append(iid)
    for k, iid in enumerate(fails[:-1]):
        if k % 3 == 0:
            record_review(store, iid, "false_reject", reviewer="ann", defect_type=None,
                          note="dust on the lens, part is fine")
        elif k % 3 == 1:
            record_review(store, iid, "confirmed_defect", reviewer="ann", defect_type="scratch")
    record_review(store, fails[-1], "confirmed_defect", reviewer="ann", defect_type="missing hole",
                  note="second one today on this fixture; told maintenance")
    store.close()
    (root / "status.json").write_text(json.dumps({
        "pid": os.getpid(), "stalled": None,
        "streams": {"line1-top": {"state": "watching"}, "line1-side": {"state": "watching"},
                    "line2": {"state": "reconnecting"}}}))
    return url, fails[-1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "console")
    args = ap.parse_args()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from inspector.console.app import create_app
    from inspector.console.auth import hash_password
    from inspector.console.config import ConsoleConfig
    from inspector.console.server import ConsoleThread, build_console

    root = Path(tempfile.mkdtemp(prefix="console-shots-"))
    try:
        url, detail_id = build(root)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = ConsoleConfig(users=[{"name": "ann", "password_hash": hash_password("demo-password")}],
                               title="Line 1+2 inspection")
        console = build_console(url, config, media_roots=[root / "done", root / "heatmaps"],
                                status_path=root / "status.json")
        server = ConsoleThread(create_app(console, f"127.0.0.1:{port}"), f"127.0.0.1:{port}")
        server.start()
        time.sleep(1.5)
        os.environ.setdefault("SE_OFFLINE", "true")
        opts = Options()
        opts.binary_location = shutil.which("chromium")
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900",
                  f"--user-data-dir={root / 'profile'}"):
            opts.add_argument(a)
        drv = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
        base = f"http://127.0.0.1:{port}"
        try:
            drv.get(base + "/login?next=/")
            drv.find_element("id", "login-name").send_keys("ann")
            drv.find_element("id", "login-password").send_keys("demo-password")
            drv.find_element("id", "login-submit").click()
            args.out.mkdir(parents=True, exist_ok=True)
            for name, path, height in (("live", "/", 760), ("detail", f"/inspection/{detail_id}", 1000),
                                       ("yield", "/yield?since=12h", 1000)):
                drv.set_window_size(1280, height)
                drv.get(base + path)
                time.sleep(1.5)
                drv.save_screenshot(str(args.out / f"{name}.png"))
                print("wrote", args.out / f"{name}.png")
        finally:
            drv.quit()
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
