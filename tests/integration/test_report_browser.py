"""The HTML reports in a real headless browser (Debian's ``chromium``): the calibration report
(calibration.report) and the period report (`inspector report`) must render to a non-blank page,
and every embedded heatmap must decode (``complete`` and ``naturalWidth > 0`` in the page).

Images are checked by a copy of the report with a small script appended that, on the window's
load event, writes the result onto ``<body data-images-loaded=...>``; ``--dump-dom`` with a
virtual-time budget prints the DOM after the load. Nothing is served: file:// only, no network.

Skipped only when chromium is missing (``apt-get install -y chromium``).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.db_fixtures import make_verdict, run_command

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium")

PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.dataset.imageCount = String(imgs.length);
  document.body.dataset.imagesLoaded = String(imgs.every(function (i) { return i.complete && i.naturalWidth > 0; }));
  document.body.dataset.svgCount = String(document.querySelectorAll("svg").length);
});
</script>"""


def _chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}"] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def screenshot(html: Path, tmp: Path) -> np.ndarray:
    """The page at 1200x1600 as a BGR uint8 image."""
    png = tmp / (html.stem + ".png")
    r = _chromium([f"--screenshot={png}", "--window-size=1200,1600", html.resolve().as_uri()], tmp)
    assert png.is_file(), f"chromium wrote no screenshot (rc {r.returncode}): {r.stderr[-2000:]}"
    img = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert img is not None, f"{png} does not decode"
    return img


def loaded_dom(html: Path, tmp: Path) -> dict[str, str]:
    """The ``data-*`` attributes the probe put on <body> after the page's load event."""
    probed = tmp / (html.stem + "-probed.html")
    text = html.read_text(encoding="utf-8")
    assert "</body>" in text
    probed.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    r = _chromium(["--dump-dom", "--virtual-time-budget=5000", probed.resolve().as_uri()], tmp)
    body = re.search(r"<body([^>]*)>", r.stdout)
    assert body, f"no <body> in chromium's DOM dump (rc {r.returncode}): {r.stderr[-2000:]}"
    return dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))


def assert_not_blank(img: np.ndarray) -> None:
    assert img.shape == (1600, 1200, 3)
    assert img.std() > 10, "the screenshot is (nearly) one colour"
    colours = np.unique(img.reshape(-1, 3)[::7], axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours in the screenshot"


def assert_has_jet_heatmap(img: np.ndarray) -> None:
    """COLORMAP_JET's dark blue background (BGR ~ (128, 0, 0)) and its red peak are on screen."""
    b, g, r = (img[..., i].astype(int) for i in range(3))
    dark_blue = (b > 100) & (g < 30) & (r < 30)
    red = (r > 180) & (g < 60) & (b < 60)
    assert dark_blue.sum() > 500 and red.sum() > 10, (int(dark_blue.sum()), int(red.sum()))


def assert_report_renders(html: Path, tmp: Path, *, images: int, svgs: int, bar_bgr: tuple[int, int, int],
                          tolerance: int) -> None:
    """The report loads with all its ``images`` heatmaps decoded and ``svgs`` charts, and its
    screenshot is not blank, shows a JET heatmap and more than 500 pixels of the chart bars' colour
    (BGR, each channel within ``tolerance``)."""
    dom = loaded_dom(html, tmp)
    assert dom.get("image-count") == str(images) and dom.get("images-loaded") == "true", dom
    assert dom.get("svg-count") == str(svgs), dom
    img = screenshot(html, tmp)
    assert_not_blank(img)
    assert_has_jet_heatmap(img)
    b, g, r = (img[..., i].astype(int) for i in range(3))
    want_b, want_g, want_r = bar_bgr
    assert ((abs(b - want_b) < tolerance) & (abs(g - want_g) < tolerance) & (abs(r - want_r) < tolerance)).sum() > 500


def jet_heatmap(path: Path, seed: int, size: tuple[int, int] = (96, 128)) -> Path:
    """A real PNG heatmap: a Gaussian blob through OpenCV's JET colour map (BGR)."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = int(rng.integers(20, h - 20)), int(rng.integers(20, w - 20))
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0 ** 2))
    assert cv2.imwrite(str(path), cv2.applyColorMap((255 * blob).astype(np.uint8), cv2.COLORMAP_JET))
    return path


def test_calibration_report_renders_in_chromium(tmp_path):
    from calibration.report import CalibrationReportData, write_calibration_report

    h1, h2 = jet_heatmap(tmp_path / "near1.png", 1), jet_heatmap(tmp_path / "near2.png", 2)
    rng = np.random.default_rng(0)
    data = CalibrationReportData(
        heldout_scores=[float(x) for x in rng.normal(0.3, 0.05, 200)], threshold=0.45, pixel_threshold=0.6,
        expected_false_reject_rate=0.01, defect_scores=[float(x) for x in rng.normal(0.7, 0.1, 40)],
        near_threshold=[("g017.png", 0.44, str(h1)), ("g103.png", 0.43, str(h2)), ("g055.png", 0.41, None)],
        stage_times={"features": 12.5, "coreset": 3.25}, bundle_id="bundle-browser",
        summary={"golden images": "240"})
    html = write_calibration_report(tmp_path / "cal" / "report.html", data)

    # the histogram's blue bars: #4a90d9 at 0.8 opacity over white
    assert_report_renders(html, tmp_path, images=2, svgs=1, bar_bgr=(225, 166, 110), tolerance=25)


def test_inspection_report_renders_in_chromium(tmp_path):
    from inspector.commands import report as report_cmd
    from inspector.storage import ResultStore

    store = ResultStore(str(tmp_path / "results.db"))
    store.ensure_schema()
    now = datetime.now(timezone.utc)
    n_fail = 0
    for i in range(24):
        kind = "fail" if i % 4 == 0 else ("error" if i == 5 else "pass")
        heat = jet_heatmap(tmp_path / f"heat{i}.png", 10 + i) if kind == "fail" else None
        n_fail += kind == "fail"
        v = make_verdict(kind=kind, score=None if kind == "error" else (0.7 + i / 100 if kind == "fail" else 0.2),
                         source=f"cam{i % 3 + 1}", at=now - timedelta(minutes=25 * i), name=f"part{i:03d}.png",
                         regions=((5, 5, 10, 8, 80, 0.9),) if kind == "fail" else (),
                         error="decode failed" if kind == "error" else None)
        store.record(v, frame_key=f"k{i}", heatmap_path=None if heat is None else str(heat))
    store.close()
    html = tmp_path / "report.html"
    rc, _ = run_command(report_cmd, ["--db", str(tmp_path / "results.db"), "--out", str(html), "--top", "4"])
    assert rc == 0 and n_fail >= 4

    # the fails-per-source bars: #c0392b
    assert_report_renders(html, tmp_path, images=4, svgs=2, bar_bgr=(43, 57, 192), tolerance=20)


def test_probe_notices_a_broken_image(tmp_path):
    """The image check can fail: a PNG data URI that does not decode reads as not loaded."""
    html = tmp_path / "broken.html"
    html.write_text('<!DOCTYPE html><html><body><p>x</p><img src="data:image/png;base64,iVBORw0KGgoAAAA=">'
                    "</body></html>", encoding="utf-8")
    dom = loaded_dom(html, tmp_path)
    assert dom.get("image-count") == "1" and dom.get("images-loaded") == "false", dom
