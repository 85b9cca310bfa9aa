"""The real daemon with an aligned bundle (preprocess.align): a misplaced good part passes, a
misplaced defect fails with its region where the frame has it, and a frame that does not look like
the part at all is an error row saying alignment failed, quarantined, while the daemon goes on."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import TEST_SIZE, small_settings
from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, rows, wait_for


def _moved(image: np.ndarray, dx: float, dy: float, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += (dx, dy)
    # Lanczos: a camera sees a turned part once; a blurrier resampling here would add blur that no
    # real frame has, on top of the one resampling alignment does
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT_101)


@pytest.fixture(scope="module")
def aligned_bundle(tmp_path_factory, golden_dir) -> Path:
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("aligned") / "bundle"
    calibrate(small_settings(preprocess={"size": [TEST_SIZE, TEST_SIZE], "align": {"enabled": True}}),
              golden_dir, out, progress=False)
    return out


def test_daemon_aligns_frames_and_refuses_unrecognisable_ones(tmp_path, aligned_bundle, part_images):
    ws = make_workspace(tmp_path / "ws", aligned_bundle,
                        extra={"preprocess": {"size": [TEST_SIZE, TEST_SIZE], "align": {"enabled": True}}})
    daemon = Daemon(ws).start()
    try:
        daemon.wait_ready()
        drop_image(ws.inbox, "good-moved.png", _moved(part_images(), 5, -4, 3.0))
        drop_image(ws.inbox, "defect-moved.png", _moved(part_images("missing_hole"), 5, -4, 3.0))
        noise = np.random.default_rng(4).integers(0, 256, (TEST_SIZE, TEST_SIZE, 3), dtype=np.uint8)
        drop_image(ws.inbox, "not-a-part.png", noise)
        wait_for(lambda: len(rows(ws.db)) == 3, 60, "three rows", daemon)
        by_name = {r["origin_name"]: r for r in rows(ws.db)}
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
