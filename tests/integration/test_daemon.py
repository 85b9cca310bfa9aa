"""The real `inspector run` process on a temp inbox: files written under a temporary name and
renamed in, rows + regions + heatmaps + file moves checked, a corrupt file quarantined with its
error row, SIGTERM gives a clean exit. (A broken bundle at start: test_daemon_faults.py.)"""
from __future__ import annotations

import os
from pathlib import Path

import cv2

from tests.integration.daemon_helpers import (Daemon, connect_ro, drop_image, make_workspace, rows, wait_for,
                                              wait_rows)


def test_daemon_end_to_end(tmp_path, bundle_dir, part_images):
    ws = make_workspace(tmp_path, bundle_dir, source={"name": "cam1"})
    inbox = ws.inbox
    # backlog present before start
    drop_image(inbox, "backlog-good.png", part_images())
    d = Daemon(ws).start()
    try:
        wait_for(lambda: len(rows(ws.db)) == 1, 90, "the backlog's row", d)
        drop_image(inbox, "good-1.png", part_images())
        drop_image(inbox, "missing-2.png", part_images("missing_hole"))
        drop_image(inbox, "missing-1.png", part_images("missing_hole"))
        (inbox / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
        (inbox / "ignored.tmp").write_bytes(b"still being written")
        wait_for(lambda: len(rows(ws.db)) == 5, 90, "five rows", d)

        by_name = {r["origin_name"]: r for r in rows(ws.db)}
        assert by_name["backlog-good.png"]["verdict"] == "pass"
        assert by_name["good-1.png"]["verdict"] == "pass"
        assert by_name["good-1.png"]["heatmap_path"] is None  # passes get none unless configured
        for bad in ("missing-2.png", "missing-1.png"):
            r = by_name[bad]
            assert r["verdict"] == "fail", r
            assert r["score"] > r["threshold"]
            heat = Path(r["heatmap_path"])
            assert heat.exists() and cv2.imread(str(heat)) is not None
            con = connect_ro(ws.db)
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
        wait_for(lambda: not (inbox / "corrupt.png").exists(), 90, "corrupt.png to leave the inbox")
        left = sorted(p.name for p in inbox.iterdir())
        assert left == [".inspector.lock", "ignored.tmp"]  # the daemon's lock file, and a name it ignores
        assert sorted(p.name for p in (ws.done / "fail").rglob("*.png")) == ["missing-1.png", "missing-2.png"]
        assert len(list((ws.done / "pass").rglob("*.png"))) == 2
        assert [p.name for p in ws.quarantine.rglob("*") if p.is_file()] == ["corrupt.png"]
        for r in rows(ws.db):
            assert Path(r["stored_path"]).exists()

        rc = d.terminate()
    finally:
        d.stop()
    log = d.log_text()
    assert rc == 0, log
    assert "stopped after 5 frames" in log
    # one INFO line per frame with verdict, score and ms
    assert sum(1 for line in log.splitlines() if "cam1 'missing-2.png' fail score=" in line and "ms" in line) == 1


def test_restart_never_double_counts(tmp_path, bundle_dir, part_images):
    ws = make_workspace(tmp_path, bundle_dir, source={"name": "cam1"})
    inbox = ws.inbox
    d = Daemon(ws).start()
    try:
        for i in range(3):
            drop_image(inbox, f"p{i}.png", part_images())
        wait_for(lambda: len(rows(ws.db)) == 3, 90, "three rows", d)
        d.terminate()
        # a crash between commit and move leaves the file in the inbox: simulate by copying one back
        done = next(ws.done.rglob("p1.png"))
        os.replace(done, inbox / "p1.png")  # same name, size, mtime, inode: the same frame
        d.start()
        drop_image(inbox, "p3.png", part_images())
        wait_for(lambda: len(rows(ws.db)) == 4 and not (inbox / "p1.png").exists(), 90,
                 "four rows and p1.png out of the inbox", d)
        names = [r["origin_name"] for r in rows(ws.db)]
        assert sorted(names) == ["p0.png", "p1.png", "p2.png", "p3.png"]
        assert d.terminate() == 0
    finally:
        d.stop()


def test_heatmaps_for_passes_when_configured(tmp_path, bundle_dir, part_images):
    # the daemon skips pixel maps for passes unless they are drawn: with the option on, a pass
    # gets its heatmap as a fail does
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
