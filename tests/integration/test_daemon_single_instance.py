"""One daemon per inbox and per SQLite database (issue 11, item 12): a second daemon on the same
inbox, or on the same database, refuses to start with one line naming the first one's PID, and
the first one goes on counting each frame once."""
from __future__ import annotations

import subprocess

import pytest

from tests.integration.daemon_helpers import (Daemon, drop_bytes, encode, make_workspace, rows, wait_inbox_empty,
                                              wait_rows)


def _second_daemon_refuses(second: Daemon) -> str:
    """Start ``second``; it must exit non-zero before READY with one line; returns that line."""
    second.start()
    try:
        rc = second.proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        second.stop()
        pytest.fail("the second daemon kept running:\n" + second.tail())
    text = second.log_text()
    lines = text.splitlines()
    assert rc != 0, text
    assert len(lines) == 1, text
    assert "ready:" not in text and "Traceback" not in text, text
    assert lines[0].startswith("inspector run: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("shared", ["inbox", "database"])
def test_second_daemon_refuses_and_names_the_first_ones_pid(tmp_path, bundle_dir, part_images, shared):
    first_ws = make_workspace(tmp_path / "first", bundle_dir)
    if shared == "inbox":  # its own database, the first one's inbox
        second_ws = make_workspace(tmp_path / "second", bundle_dir, source={"inbox": str(first_ws.inbox)})
    else:  # its own inbox, the first one's database
        second_ws = make_workspace(tmp_path / "second", bundle_dir, database={"url": f"sqlite:///{first_ws.db}"})
    first = Daemon(first_ws).start().wait_ready(60)
    try:
        line = _second_daemon_refuses(Daemon(second_ws))
        if shared == "inbox":
            assert f"inbox {first_ws.inbox} is already watched by inspector PID {first.pid}" in line, line
        else:
            assert f"database {first_ws.db} is already used by inspector PID {first.pid}" in line, line

        # the first daemon is unaffected and records each frame once
        names = [drop_bytes(first_ws.inbox, f"f{i}.png", encode(part_images())).name for i in range(3)]
        wait_rows(first_ws, 3, daemon=first)
        wait_inbox_empty(first_ws, daemon=first)
        assert first.terminate() == 0, first.tail()
    finally:
        first.stop()
    assert sorted(r["origin_name"] for r in rows(first_ws.db)) == sorted(names)
    log = first.log_text()
    for name in names:
        assert log.count(f"'{name}'") == 1, log  # one verdict line per frame: counted once
    # the lock file in the inbox is never taken for a frame
    assert not [r for r in rows(first_ws.db) if r["origin_name"].startswith(".")]


def test_daemon_starts_again_after_the_first_one_stopped(tmp_path, bundle_dir):
    """The lock goes with the process: a stopped (or killed) daemon leaves nothing that blocks the next."""
    ws = make_workspace(tmp_path, bundle_dir)
    first = Daemon(ws).start().wait_ready(60)
    first.kill()
    second = Daemon(ws).start()
    try:
        second.wait_ready(60)
        assert second.terminate() == 0, second.tail()
    finally:
        second.stop()
