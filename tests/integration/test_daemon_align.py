"""The real daemon with an aligned bundle (preprocess.align): a misplaced good part passes, a
misplaced defect fails with its region where the frame has it, and a frame that does not look like
the part at all is an error row saying alignment failed, quarantined, while the daemon goes on."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.conftest import TEST_SIZE, moved
from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, wait_rows


def test_daemon_aligns_frames_and_refuses_unrecognisable_ones(tmp_path, aligned_bundle_dir, part_images):
    ws = make_workspace(tmp_path / "ws", aligned_bundle_dir,
                        extra={"preprocess": {"size": [TEST_SIZE, TEST_SIZE], "align": {"enabled": True}}})
    daemon = Daemon(ws).start()
    try:
        daemon.wait_ready()
        drop_image(ws.inbox, "good-moved.png", moved(part_images(), 5, -4, 3.0)[0])
        drop_image(ws.inbox, "defect-moved.png", moved(part_images("missing_hole"), 5, -4, 3.0)[0])
        noise = np.random.default_rng(4).integers(0, 256, (TEST_SIZE, TEST_SIZE, 3), dtype=np.uint8)
        drop_image(ws.inbox, "not-a-part.png", noise)
        recorded = wait_rows(ws, 3, timeout=60, daemon=daemon)
        assert len(recorded) == 3, recorded
        by_name = {r["origin_name"]: r for r in recorded}
        assert by_name["good-moved.png"]["verdict"] == "pass", by_name["good-moved.png"]
        defect = by_name["defect-moved.png"]
        assert defect["verdict"] == "fail" and Path(defect["heatmap_path"]).is_file(), defect
        bad = by_name["not-a-part.png"]
        assert bad["verdict"] == "error" and bad["error_reason"].startswith("alignment: "), bad
        assert Path(bad["stored_path"]).parent.parent == ws.quarantine
        assert daemon.alive()
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
