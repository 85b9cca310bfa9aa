"""The SQLite file deleted (or replaced) under the running daemon (issue 11, item 2).

Rows committed to an unlinked inode are gone at the next start, so the daemon must notice before
it commits and moves frames: one ERROR, frames left in the inbox, non-zero exit (systemd restarts
it and the restart opens the new file)."""
from __future__ import annotations

import os
import sqlite3
import time

from tests.integration.daemon_helpers import (Daemon, drop_bytes, encode, make_workspace, rows, wait_for,
                                              wait_inbox_empty, wait_rows)


def test_deleted_database_stops_the_daemon_and_new_frames_stay_in_the_inbox(tmp_path, bundle_dir, part_images):
    ws = make_workspace(tmp_path, bundle_dir)
    daemon = Daemon(ws).start().wait_ready(60)
    try:
        for i in range(2):
            drop_bytes(ws.inbox, f"before-{i}.png", encode(part_images()))
        wait_rows(ws, 2, daemon=daemon)
        wait_inbox_empty(ws, daemon=daemon)

        for p in tmp_path.glob("inspector.db*"):  # as `rm inspector.db*` does
            p.unlink()
        after = [drop_bytes(ws.inbox, f"after-{i}.png", encode(part_images())).name for i in range(3)]
        wait_for(lambda: not daemon.alive(), 60, "the daemon to exit after its database was deleted")
        rc = daemon.proc.returncode
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert rc != 0, log
    assert log.count("database file was deleted or replaced") == 1, log
    line = next(x for x in log.splitlines() if "database file was deleted or replaced" in x)
    assert " ERROR " in line and str(ws.db) in line and "restarting" in line, line
    assert "Traceback" not in log, log
    assert set(after) <= set(ws.inbox_files()), "frames not recorded must stay in the inbox"
    assert not any(p.name.startswith("after-") for p in ws.output_files()), "nothing moved without its row"

    # the restart (systemd's Restart=on-failure) makes a new database and records them there
    daemon = Daemon(ws).start()
    try:
        recorded = wait_rows(ws, 3, daemon=daemon)
        wait_inbox_empty(ws, daemon=daemon)
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        daemon.stop()
    assert sorted(r["origin_name"] for r in recorded) == sorted(after)


def test_replaced_database_is_detected_too(tmp_path, bundle_dir, part_images):
    """A restore copied over the path (a new inode there) is not the file the daemon writes to."""
    ws = make_workspace(tmp_path, bundle_dir)
    daemon = Daemon(ws).start().wait_ready(60)
    try:
        drop_bytes(ws.inbox, "before.png", encode(part_images()))
        wait_rows(ws, 1, daemon=daemon)
        copy = tmp_path / "restore.db"
        with sqlite3.connect(str(ws.db)) as src, sqlite3.connect(str(copy)) as dst:
            src.backup(dst)  # a consistent copy, as a restore would bring back
        os.replace(copy, ws.db)
        time.sleep(0.2)
        drop_bytes(ws.inbox, "after.png", encode(part_images()))
        wait_for(lambda: not daemon.alive(), 60, "the daemon to exit after its database was replaced")
    finally:
        daemon.stop()
    assert daemon.proc.returncode != 0
    assert "database file was deleted or replaced" in daemon.log_text()
    assert "after.png" in ws.inbox_files()
