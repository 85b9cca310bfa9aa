"""output.keep_in_inbox: recorded frames stay where the camera put them, and are inspected once.

The folder source rescans the inbox every 0.25-2 s (the safety net for missed events); a file it
has already recorded and left there must not be read, run through the engine and counted again.
"""
from __future__ import annotations

import time

from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, rows, wait_rows


def test_recorded_frames_left_in_the_inbox_are_inspected_once(tmp_path, bundle_dir, part_images):
    ws = make_workspace(tmp_path, bundle_dir, output={"keep_in_inbox": True})
    d = Daemon(ws).start()
    try:
        d.wait_ready()
        drop_image(ws.inbox, "good.png", part_images())
        drop_image(ws.inbox, "bad.png", part_images("missing_hole"))
        wait_rows(ws, 2, daemon=d)
        time.sleep(3.0)  # longer than the slowest rescan (2 s)
        # a new file under a name already seen is a new frame
        drop_image(ws.inbox, "good.png", part_images())
        wait_rows(ws, 3, daemon=d)
        time.sleep(3.0)
        log = d.log_text()
    finally:
        d.stop()
    assert sorted(r["origin_name"] for r in rows(ws.db)) == ["bad.png", "good.png", "good.png"]
    assert ws.inbox_files() == ["bad.png", "good.png"]
    # one log line per inspection: 2 for good.png (two files), 1 for bad.png; no re-inspection
    assert log.count("'good.png' pass score=") == 2, log
    assert log.count("'bad.png' fail score=") == 1, log
