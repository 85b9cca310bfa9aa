"""The real `inspector run` process on a temp inbox: files written under a temporary name and
renamed in, rows + regions + heatmaps + file moves checked, a corrupt file quarantined with its
error row, SIGTERM gives a clean exit."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from tests.conftest import daemon_env, write_png


def write_config(tmp: Path, bundle: Path) -> Path:
    cfg = tmp / "inspector.yaml"
    cfg.write_text(f"""
bundle: {bundle}
database: {{url: "sqlite:///{tmp / 'results.db'}"}}
sources: [{{type: folder, name: cam1, inbox: {tmp / 'inbox'}, stable_seconds: 0.3}}]
output: {{done_dir: {tmp / 'done'}, quarantine_dir: {tmp / 'quarantine'}, heatmap_dir: {tmp / 'heatmaps'},
          layout: per_verdict}}
engine: {{max_batch: 4}}
""")
    (tmp / "inbox").mkdir()
    return cfg


def rows(db: Path) -> list[sqlite3.Row]:
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return con.execute("SELECT * FROM inspections ORDER BY id").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def wait_for(pred, timeout=90.0, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited early with {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError("timed out")


def drop(inbox: Path, name: str, image) -> None:
    tmp = inbox / f".{name}.partial"
    write_png(tmp, image)
    os.replace(tmp, inbox / name)  # a camera's write-then-rename


@pytest.fixture
def daemon(tmp_path, bundle_dir):
    cfg = write_config(tmp_path, bundle_dir)
    started = []

    def start():
        p = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(cfg)], env=daemon_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(p)
        return p

    yield tmp_path, start
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_daemon_end_to_end(daemon, part_images):
    tmp, start = daemon
    inbox, db = tmp / "inbox", tmp / "results.db"
    # backlog present before start
    drop(inbox, "backlog-good.png", part_images())
    proc = start()
    wait_for(lambda: len(rows(db)) == 1, proc=proc)
    drop(inbox, "good-1.png", part_images())
    drop(inbox, "missing-2.png", part_images("missing_hole"))
    drop(inbox, "missing-1.png", part_images("missing_hole"))
    (inbox / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    (inbox / "ignored.tmp").write_bytes(b"still being written")
    wait_for(lambda: len(rows(db)) == 5, proc=proc)

    by_name = {r["origin_name"]: r for r in rows(db)}
    assert by_name["backlog-good.png"]["verdict"] == "pass"
    assert by_name["good-1.png"]["verdict"] == "pass"
    assert by_name["good-1.png"]["heatmap_path"] is None  # passes get none unless configured
    for bad in ("missing-2.png", "missing-1.png"):
        r = by_name[bad]
        assert r["verdict"] == "fail", dict(r)
        assert r["score"] > r["threshold"]
        heat = Path(r["heatmap_path"])
        assert heat.exists() and cv2.imread(str(heat)) is not None
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        regions = con.execute("SELECT x, y, w, h, area, peak_score FROM defect_regions WHERE inspection_id=?",
                              (r["id"],)).fetchall()
        con.close()
        assert regions, "a fail must point at a region"
        assert all(0 <= x < 128 and 0 <= y < 128 and w > 0 and h > 0 for x, y, w, h, *_ in regions)
    err = by_name["corrupt.png"]
    assert err["verdict"] == "error" and "corrupt or truncated png" in err["error_reason"]
    # every row's timings are recorded
    assert by_name["good-1.png"]["inference_ms"] > 0 and by_name["good-1.png"]["total_ms"] > 0

    # file moves happen only after the commit; temp names are never touched
    wait_for(lambda: not (inbox / "corrupt.png").exists())
    left = sorted(p.name for p in inbox.iterdir())
    assert left == ["ignored.tmp"]
    assert sorted(p.name for p in (tmp / "done" / "fail").rglob("*.png")) == ["missing-1.png", "missing-2.png"]
    assert len(list((tmp / "done" / "pass").rglob("*.png"))) == 2
    assert [p.name for p in (tmp / "quarantine").rglob("*")  if p.is_file()] == ["corrupt.png"]
    for r in rows(db):
        assert Path(r["stored_path"]).exists()

    proc.send_signal(signal.SIGTERM)
    out, errtext = proc.communicate(timeout=60)
    assert proc.returncode == 0, errtext
    assert "stopped after 5 frames" in errtext
    # one INFO line per frame with verdict, score and ms
    assert sum(1 for line in errtext.splitlines() if "cam1 'missing-2.png' fail score=" in line and "ms" in line) == 1


def test_restart_never_double_counts(daemon, part_images):
    tmp, start = daemon
    inbox, db = tmp / "inbox", tmp / "results.db"
    proc = start()
    for i in range(3):
        drop(inbox, f"p{i}.png", part_images())
    wait_for(lambda: len(rows(db)) == 3, proc=proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    # a crash between commit and move leaves the file in the inbox: simulate by copying one back
    done = next((tmp / "done").rglob("p1.png"))
    os.replace(done, inbox / "p1.png")  # same name, size, mtime, inode: the same frame
    proc = start()
    drop(inbox, "p3.png", part_images())
    wait_for(lambda: len(rows(db)) == 4 and not (inbox / "p1.png").exists(), proc=proc)
    names = [r["origin_name"] for r in rows(db)]
    assert sorted(names) == ["p0.png", "p1.png", "p2.png", "p3.png"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0


def test_broken_bundle_fails_at_start_with_one_line(tmp_path):
    cfg = write_config(tmp_path, tmp_path / "no-such-bundle")
    p = subprocess.run([sys.executable, "-m", "inspector", "run", "--config", str(cfg)], env=daemon_env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no-such-bundle" in lines[0] and "inspector calibrate" in lines[0], p.stderr
    assert "Traceback" not in p.stderr


def test_heatmaps_for_passes_when_configured(tmp_path, bundle_dir, part_images):
    # the daemon skips pixel maps for passes unless they are drawn: with the option on, a pass
    # gets its heatmap as a fail does
    from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, wait_rows

    ws = make_workspace(tmp_path, bundle_dir, output={"heatmaps_for_passes": True})
    d = Daemon(ws).start()
    try:
        d.wait_ready()
        drop_image(ws.inbox, "good.png", part_images())
        drop_image(ws.inbox, "bad.png", part_images("missing_hole"))
        by_name = {r["origin_name"]: r for r in wait_rows(ws, 2, daemon=d)}
    finally:
        d.stop()
    assert by_name["good.png"]["verdict"] == "pass" and by_name["bad.png"]["verdict"] == "fail"
    for r in by_name.values():
        assert r["heatmap_path"] and cv2.imread(r["heatmap_path"]) is not None, dict(r)
