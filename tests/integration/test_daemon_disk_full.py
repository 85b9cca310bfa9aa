"""done/ on another filesystem that fills up (issue 11, item 11).

The move across filesystems copies to a ``.part`` file and renames it. When the copy runs out of
space: one ERROR for the incident (not one per frame), no ``.part`` left behind, the frames stay
in the inbox, and once space is back they move by themselves (no restart), with one line saying so.
"""
from __future__ import annotations

import os

from tests.integration.daemon_helpers import (Daemon, drop_bytes, encode, fill_up, make_workspace, rows,
                                              small_tmpfs, wait_for, wait_inbox_empty)


def _part_files(folder) -> list[str]:
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs if f.endswith(".part")]


def test_full_done_filesystem_is_one_incident_and_resumes_by_itself(tmp_path, bundle_dir, part_images):
    n = 6
    ws = make_workspace(tmp_path, bundle_dir)
    with small_tmpfs(ws.done, "1M"):
        daemon = Daemon(ws).start().wait_ready(60)
        try:
            filler = fill_up(ws.done)
            names = [drop_bytes(ws.inbox, f"full-{i}.png", encode(part_images())).name for i in range(n)]
            daemon.wait_log("No space left on device", timeout=30)
            wait_for(lambda: len(rows(ws.db)) >= 1, 30, "a row", daemon)
            assert daemon.alive()
            assert set(names) <= set(ws.inbox_files()), "frames stay in the inbox while they cannot be moved"
            assert _part_files(ws.done) == [], "a failed copy must not leave its .part file"

            filler.unlink()  # space is back: no restart, the frames go through
            wait_inbox_empty(ws, timeout=60, daemon=daemon)
            wait_for(lambda: len(rows(ws.db)) == n, 30, f"{n} rows", daemon)
            daemon.wait_log("recovered after", timeout=10)
            moved = sorted(p.name for p in ws.output_files())
            assert daemon.terminate() == 0, daemon.tail()
        finally:
            daemon.stop()
    assert moved == sorted(names)
    recorded = rows(ws.db)
    assert sorted(r["origin_name"] for r in recorded) == sorted(names)
    assert all(r["stored_path"] and "/done/" in r["stored_path"] for r in recorded), recorded
    log = daemon.log_text()
    errors = [x for x in log.splitlines() if " ERROR " in x]
    assert len(errors) == 1 and "No space left on device" in errors[0], "\n".join(errors)
    assert log.count("recovered after") == 1, log
    assert "Traceback" not in log, log
