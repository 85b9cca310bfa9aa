"""Issue 5's "nothing lost" guarantees, against the real daemon process.

- SIGKILL at random moments while a camera keeps dropping frames: after a final clean run,
  every file has exactly one row and sits in exactly one output folder, no heatmap is corrupt.
- A second connection holding the SQLite write lock: frames wait in the inbox, the problem is
  logged once, everything is recorded exactly once after the lock is released.
- SIGTERM mid-stream: frames in hand finish, exit 0, unprocessed files stay in the inbox.
- A broken config, bundle, inbox or database at start: non-zero exit, one line on stderr.
"""
from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import daemon_env
from tests.integration.daemon_helpers import (Daemon, drop_bytes, encode, heatmap_problems, hold_write_lock,
                                              make_workspace, row_count, rows, wait_for, wait_inbox_empty, wait_rows)

DEFECTS = (None, None, "scratch", "spot", "missing_hole")  # ~60% fails: plenty of heatmap writes to interrupt


class Camera(threading.Thread):
    """Drops ``n`` synthetic parts into the inbox at about ``rate`` per second, each written under
    a temporary name and renamed in, whatever the daemon is doing.

    ``allow(k)`` caps how many files it may have dropped so far: the kill test hands out one share
    per daemon lifetime, so kills land while frames flow however fast this machine drains them."""

    def __init__(self, inbox: Path, n: int, rate: float, seed: int, allowed: int | None = None):
        super().__init__(name="camera", daemon=True)
        self.inbox, self.n, self.rate, self.seed = inbox, n, rate, seed
        self.names: list[str] = []
        self.error: BaseException | None = None
        self._allowed = n if allowed is None else allowed
        self._gate = threading.Condition()

    def allow(self, k: int) -> None:
        with self._gate:
            self._allowed = max(self._allowed, k)
            self._gate.notify_all()

    def _wait_for_turn(self, i: int) -> None:
        with self._gate:
            self._gate.wait_for(lambda: i < self._allowed)

    def run(self) -> None:
        from calibration.synthetic import make_part

        rng = np.random.default_rng(self.seed)
        pace = random.Random(self.seed)
        try:
            for i in range(self.n):
                self._wait_for_turn(i)
                defect = DEFECTS[i % len(DEFECTS)]
                name = f"part-{i:04d}-{defect or 'good'}.png"
                drop_bytes(self.inbox, name, encode(make_part(rng, size=128, defect=defect)))
                self.names.append(name)
                time.sleep(pace.uniform(0.0, 2.0 / self.rate))
        except BaseException as exc:  # surfaced by the test
            self.error = exc


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path, bundle_dir):
    n_files, min_kills = 520, 12
    ws = make_workspace(tmp_path, bundle_dir)
    share = -(-n_files // min_kills)
    camera = Camera(ws.inbox, n_files, rate=25.0, seed=5, allowed=share)
    chance = random.Random(20240605)
    daemon = Daemon(ws)
    kills: list[tuple[str, int]] = []  # (when, rows at the kill)
    t_start = time.monotonic()
    camera.start()
    try:
        while len(kills) < min_kills or camera.is_alive():
            daemon.start()
            if chance.random() < 0.2:
                # during start-up: engine load, schema check, backlog scan
                time.sleep(chance.uniform(0.2, 2.0))
                when = "starting"
            else:
                daemon.wait_ready(60)
                time.sleep(chance.uniform(0.05, 1.5))
                when = "running"
            assert daemon.alive(), daemon.tail()
            daemon.kill()
            kills.append((when, row_count(ws.db)))
            camera.allow((len(kills) + 1) * share)
        assert camera.error is None, camera.error
        assert len(camera.names) == n_files

        # a partial heatmap write as a crash mid-write leaves it: the next start must remove it
        planted = ws.heatmaps / "1999-01-01" / ".tmp-killed-mid-write.png"
        planted.parent.mkdir(parents=True, exist_ok=True)
        planted.write_bytes(b"\x89PNG\r\n\x1a\n half a heatmap")

        # final clean run drains the inbox
        daemon.start().wait_ready(60)
        wait_rows(ws, n_files, timeout=120, daemon=daemon)
        wait_inbox_empty(ws, timeout=30, daemon=daemon)
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        daemon.stop()
    elapsed = time.monotonic() - t_start
    print(f"\n{len(kills)} SIGKILLs in {elapsed:.0f}s; rows at each kill: {kills}")
    mid_stream = [r for w, r in kills if 0 < r < n_files]
    assert len(mid_stream) >= min_kills // 2, f"too few kills landed while frames were flowing: {kills}"

    # rows == files, exactly once
    recorded = rows(ws.db)
    assert len(recorded) == n_files
    keys = Counter(r["frame_key"] for r in recorded)
    assert not [k for k, c in keys.items() if c > 1], "duplicate frame keys"
    names = Counter(r["origin_name"] for r in recorded)
    assert not [k for k, c in names.items() if c > 1], "duplicate origin names"
    assert set(names) == set(camera.names)

    # the inbox is empty; every file is in exactly one output folder, where its row says
    assert ws.inbox_files() == []
    outputs = ws.output_files()
    assert len(outputs) == n_files, f"{len(outputs)} files in done/ + quarantine/ for {n_files} frames"
    assert Counter(p.name for p in outputs) == Counter(camera.names)
    assert sorted(str(p) for p in outputs) == sorted(r["stored_path"] for r in recorded)
    for r in recorded:
        assert os.path.isfile(r["stored_path"]), r
        expected = "quarantine" if r["verdict"] == "error" else f"done/{r['verdict']}"
        assert f"/{expected}/" in r["stored_path"], r
    assert not [r for r in recorded if r["verdict"] == "error"], "synthetic parts must all decode"

    # heatmaps: every one decodes, none half-written left behind (the planted one was removed),
    # and each belongs to exactly one row
    assert not planted.exists(), "the start after a crash must remove .tmp-* heatmap files"
    assert heatmap_problems(ws) == []
    heatmaps = sorted(os.path.join(d, f) for d, _, fs in os.walk(ws.heatmaps) for f in fs)
    referenced = sorted(r["heatmap_path"] for r in recorded if r["heatmap_path"])
    assert heatmaps == referenced
    assert len(referenced) == sum(1 for r in recorded if r["verdict"] == "fail") > 0

    # the per-hour verdict counts commit with their rows: after every kill they still agree
    con = sqlite3.connect(f"file:{ws.db}?mode=ro", uri=True)
    try:
        rollup = dict(((h, s, v), n) for h, s, v, n in con.execute(
            "SELECT hour, source, verdict, count FROM yield_hours"))
        counted = dict(((h, s, v), n) for h, s, v, n in con.execute(
            "SELECT substr(captured_at, 1, 13) || ':00:00.000000' AS h, source, verdict, COUNT(*) "
            "FROM inspections GROUP BY h, source, verdict"))
    finally:
        con.close()
    assert rollup == counted and sum(rollup.values()) == n_files


def test_locked_database_keeps_frames_in_inbox_and_logs_once(tmp_path, bundle_dir, part_images):
    n_locked = 14
    ws = make_workspace(tmp_path, bundle_dir, database={"busy_timeout_s": 0.5})
    daemon = Daemon(ws).start().wait_ready(60)
    try:
        drop_bytes(ws.inbox, "before-lock.png", encode(part_images()))
        wait_rows(ws, 1, daemon=daemon)

        with hold_write_lock(ws.db):
            names = []
            # frames keep arriving during the whole lock: reads still work (WAL), writes wait
            for i in range(n_locked):
                names.append(drop_bytes(ws.inbox, f"locked-{i:02d}.png", encode(part_images())).name)
                time.sleep(0.25)
            daemon.wait_log("results database unavailable", timeout=20)
            assert row_count(ws.db) == 1, "nothing can be committed while the lock is held"
            assert set(names) <= set(ws.inbox_files()), "frames stay in the inbox until their row is committed"
            assert daemon.alive()

        recorded = wait_rows(ws, 1 + n_locked, timeout=60, daemon=daemon)
        wait_inbox_empty(ws, daemon=daemon)
        daemon.wait_log("recovered after", timeout=10)
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        daemon.stop()
    assert len(recorded) == 1 + n_locked
    assert Counter(r["origin_name"] for r in recorded) == Counter(["before-lock.png"] + names)
    assert len({r["frame_key"] for r in recorded}) == 1 + n_locked
    log = daemon.log_text()
    assert log.count("ERROR inspector.service: results database unavailable:") == 1, log
    assert log.count("results database unavailable: recovered after") == 1, log


def test_sigterm_mid_stream_finishes_frames_in_hand_and_loses_nothing(tmp_path, bundle_dir, part_images):
    n = 80
    ws = make_workspace(tmp_path, bundle_dir)
    names = [drop_bytes(ws.inbox, f"backlog-{i:03d}.png", encode(part_images())).name for i in range(n)]
    daemon = Daemon(ws).start()
    try:
        wait_for(lambda: row_count(ws.db) >= 5, 60, "the first rows", daemon)
        t_term = time.monotonic()
        assert daemon.terminate(timeout=60) == 0, daemon.tail()
        stop_s = time.monotonic() - t_term
    finally:
        daemon.stop()
    log = daemon.log_text()
    assert "stopping: finishing frames in hand" in log and "stopped after" in log, log
    assert "Traceback" not in log, log
    recorded = rows(ws.db)
    left = set(ws.inbox_files())
    done_names = {r["origin_name"] for r in recorded}
    assert 0 < len(recorded) < n, f"SIGTERM should land mid-stream ({len(recorded)} of {n} rows)"
    assert stop_s < 15, f"drain took {stop_s:.1f}s"
    # every recorded frame has been moved out; every other one is still in the inbox, untouched
    assert not done_names & left
    assert done_names | left == set(names)
    for r in recorded:
        assert os.path.isfile(r["stored_path"]), r

    # the next start takes the rest, and counts nothing twice
    daemon = Daemon(ws).start()
    try:
        wait_rows(ws, n, timeout=60, daemon=daemon)
        wait_inbox_empty(ws, daemon=daemon)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
    recorded = rows(ws.db)
    assert len(recorded) == n and {r["origin_name"] for r in recorded} == set(names)


# ---------------------------------------------------------------- broken start-up
def _break(case: str, root: Path, bundle_dir: Path) -> tuple[Path, list[str]]:
    """Make a workspace broken in one way; returns the config and the words the error must name."""
    bundle = root / "bundle"
    shutil.copytree(bundle_dir, bundle)
    ws = make_workspace(root, bundle)
    data = ws.settings  # what make_workspace wrote to ws.config
    if case == "missing_bundle":
        data["bundle"] = str(root / "no-such-bundle")
        words = ["no-such-bundle", "inspector calibrate"]  # what is missing, and how to make one
    elif case == "corrupt_manifest":
        (bundle / "manifest.json").write_text('{"schema_version": 1, "network": ')
        words = ["manifest.json"]
    elif case == "bad_key":
        data["runtime"]["queue_sise"] = 4
        words = ["runtime.queue_sise"]
    elif case == "missing_inbox":
        data["sources"][0]["inbox"] = str(root / "no-such-inbox")
        words = ["no-such-inbox"]
    elif case == "unwritable_database":
        # under /proc nobody can create a file, not even root (a chmod would not stop root)
        data["database"]["url"] = "sqlite:////proc/inspector-test.db"
        words = ["/proc/inspector-test.db"]
    else:
        raise AssertionError(case)
    ws.config.write_text(yaml.safe_dump(data))
    return ws.config, words


@pytest.mark.parametrize("case", ["missing_bundle", "corrupt_manifest", "bad_key", "missing_inbox",
                                  "unwritable_database"])
def test_broken_start_exits_nonzero_with_one_line(tmp_path, bundle_dir, case):
    config, words = _break(case, tmp_path, bundle_dir)
    proc = subprocess.run([sys.executable, "-m", "inspector", "run", "--config", str(config)], env=daemon_env(),
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert lines[0].startswith("inspector run: error: "), lines[0]
