"""Unwritable outputs and stalls (issue 11, item 10).

- At start: an output folder or the database that cannot be written is refused with one line
  and a non-zero exit, before READY (not a daemon that says READY and then never records).
- After start: frames waiting with no commit for ``runtime.stall_seconds`` is a stall: status.json,
  ``inspector status`` and the metrics say so, and WATCHDOG=1 stops so systemd restarts the
  service; when the cause clears, the frames go through and the pings resume.

Tests run as root, and root ignores permission bits: "read-only" here is a read-only mount (the
tests skip, saying why, where mounting is not allowed) or a folder of /proc, where nobody can
create files.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import daemon_env
from tests.integration.daemon_helpers import (Daemon, drop_bytes, encode, hold_write_lock, immutable,
                                              make_workspace, read_only_mount, row_count, wait_for, wait_rows)
from tests.integration.notify_listener import notify_env


def _run_refused(config, cwd) -> str:
    proc = subprocess.run([sys.executable, "-m", "inspector", "run", "--config", str(config)], env=daemon_env(),
                          capture_output=True, text=True, timeout=120, cwd=str(cwd))
    lines = proc.stderr.splitlines()
    assert proc.returncode != 0, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("inspector run: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("which", ["done_dir", "quarantine_dir", "heatmap_dir"])
def test_read_only_output_folder_is_refused_at_start(tmp_path, bundle_dir, which):
    folder = tmp_path / "ro-out"
    folder.mkdir()
    ws = make_workspace(tmp_path, bundle_dir, output={which: str(folder)})
    with read_only_mount(folder):
        line = _run_refused(ws.config, tmp_path)
    assert f"output folder {folder}" in line and "not writable" in line, line


def test_output_folder_nobody_can_write_is_refused_at_start(tmp_path, bundle_dir):
    """/proc/self exists and is a folder, but no one, root included, can create a file there
    (no mount needed, so this runs everywhere)."""
    ws = make_workspace(tmp_path, bundle_dir, output={"heatmap_dir": "/proc/self"})
    line = _run_refused(ws.config, tmp_path)
    assert "output folder /proc/self" in line and "not writable" in line, line


def test_read_only_database_is_refused_at_start(tmp_path, bundle_dir, part_images):
    """A database that opens and reads fine but cannot take a write (here an immutable file; a
    non-root service user meets the same with a file it may only read), with the bundle already
    registered so that starting needs no write of its own: it used to start, say READY, and then
    hold every frame forever."""
    ws = make_workspace(tmp_path, bundle_dir)
    first = Daemon(ws).start().wait_ready(60)  # creates the schema and registers the bundle
    drop_bytes(ws.inbox, "one.png", encode(part_images()))
    wait_rows(ws, 1, daemon=first)
    assert first.terminate() == 0, first.tail()
    with immutable(ws.db):
        line = _run_refused(ws.config, tmp_path)
    assert str(ws.db) in line and "read-only" in line, line


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _metric(port: int, name: str) -> float | None:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _status_file(ws) -> dict:
    try:
        return json.loads((ws.root / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _status(ws) -> tuple[int, str, dict]:
    text = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(ws.config)],
                          env=daemon_env(), capture_output=True, text=True, timeout=60)
    js = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(ws.config), "--format", "json"],
                        env=daemon_env(), capture_output=True, text=True, timeout=60)
    return text.returncode, text.stdout, json.loads(js.stdout)["daemon"]


def test_stall_after_start_is_reported_and_stops_the_watchdog(tmp_path, bundle_dir, part_images, listener):
    port = _free_port()
    ws = make_workspace(tmp_path, bundle_dir, database={"busy_timeout_s": 0.5}, runtime={"stall_seconds": 2},
                        extra={"metrics": {"listen": f"127.0.0.1:{port}"}})
    daemon = Daemon(ws, env=notify_env(listener)).start().wait_ready(60)
    try:
        drop_bytes(ws.inbox, "first.png", encode(part_images()))
        wait_rows(ws, 1, daemon=daemon)
        assert _metric(port, "inspector_stalled") == 0

        with hold_write_lock(ws.db):  # another writer that never lets go, as far as the daemon can tell
            names = [drop_bytes(ws.inbox, f"held-{i}.png", encode(part_images())).name for i in range(3)]
            daemon.wait_log("stalled: no commit for", timeout=30)
            t_stalled = time.monotonic()
            wait_for(lambda: _metric(port, "inspector_stalled") == 1, 10, "the stalled gauge", daemon)
            wait_for(lambda: _status_file(ws).get("stalled"), 15, "status.json to say stalled", daemon, interval=0.5)
            rc, text, status = _status(ws)
            time.sleep(3.0)  # no ping for longer than the 2 s watchdog interval: systemd would restart us
            t_check = time.monotonic()
            assert row_count(ws.db) == 1
            assert set(names) <= set(ws.inbox_files())
        pings = [t for t, a in listener.assignments() if a == "WATCHDOG=1"]
        assert not [t for t in pings if t_stalled + 1.0 < t < t_check], "WATCHDOG=1 sent while stalled"
        assert rc != 0, text
        stall_line = next(x for x in text.splitlines() if "stalled:" in x)
        assert "frames wait" in stall_line and "last error" in stall_line and "locked" in stall_line, text
        assert "no commit for" in status["stalled"] and status["frames_waiting"] >= 1, status

        # the lock goes: the frames are recorded, the stall clears, the pings resume
        wait_rows(ws, 4, timeout=60, daemon=daemon)
        t_clear = time.monotonic()
        wait_for(lambda: _metric(port, "inspector_stalled") == 0, 10, "the gauge back at 0", daemon)
        wait_for(lambda: any(t > t_clear for t, a in listener.assignments() if a == "WATCHDOG=1"), 10,
                 "WATCHDOG=1 again", daemon)
        wait_for(lambda: _status_file(ws).get("stalled", 0) is None, 15, "status.json without the stall", daemon,
                 interval=0.5)
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert log.count("stalled: no commit for") == 1, log
    assert "Traceback" not in log, log

