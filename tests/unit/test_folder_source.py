"""FolderSource with real watchdog (inotify) events and real files: when a file counts as complete.

stable_seconds is set to 5 s here, so a frame that arrives within a second was taken on its
close/rename event, not on the size-stability clock."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from inspector.settings import FolderSourceConfig
from inspector.sources.folder import FolderSource
from tests.conftest import write_png

STABLE = 5.0


@pytest.fixture
def source(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    got: dict[str, float] = {}

    def emit(frame):
        got[os.path.basename(frame.origin_path)] = time.monotonic()
        return True

    src = FolderSource(FolderSourceConfig(name="cam", inbox=inbox, stable_seconds=STABLE), max_pixels=10**8)
    src.start(emit)
    assert src.wait_backlog(5.0)
    yield inbox, got
    src.stop()


def _part() -> np.ndarray:
    return (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)


def _wait(got: dict, name: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if name in got:
            return True
        time.sleep(0.005)
    return False


def test_fresh_file_renamed_in_from_another_folder_is_taken_at_once(source, tmp_path):
    # a camera that writes elsewhere and moves the finished file in: watchdog's default calls
    # that "created", which used to wait stable_seconds (0.5 s by default) for nothing
    inbox, got = source
    stage = tmp_path / "stage"
    stage.mkdir()
    write_png(stage / "p1.png", _part())
    t0 = time.monotonic()
    os.replace(stage / "p1.png", inbox / "p1.png")
    assert _wait(got, "p1.png", STABLE - 1.0), "a renamed-in file waited for the size-stability clock"
    assert got["p1.png"] - t0 < 1.0


def test_file_still_open_for_writing_is_not_taken_until_closed(source, tmp_path):
    inbox, got = source
    stage = tmp_path / "stage"
    stage.mkdir()
    write_png(stage / "whole.png", _part())
    data = (stage / "whole.png").read_bytes()
    with open(inbox / "slow.png", "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        assert not _wait(got, "slow.png", 1.0), "a file still being written was read"
        fh.write(data[len(data) // 2:])
        t_closed = time.monotonic()
    assert _wait(got, "slow.png", STABLE - 1.0), "a closed file waited for the size-stability clock"
    assert got["slow.png"] - t_closed < 1.0


def test_rename_within_the_inbox_is_taken_under_the_new_name(source):
    inbox, got = source
    write_png(inbox / ".p2.png.partial", _part())  # ignored pattern while being written
    os.replace(inbox / ".p2.png.partial", inbox / "p2.png")
    assert _wait(got, "p2.png", STABLE - 1.0)
    assert set(got) == {"p2.png"}
    assert Path(inbox / "p2.png").exists()


# --- a decode failure on a file still being written is not an error (issue 11, item 3) ----------

QUICK = 0.4  # stable_seconds for these tests


@pytest.fixture
def quick_source(tmp_path):
    """A FolderSource with a short stable_seconds; records (name, error, time) of every frame."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    got: list[tuple[str, str, float]] = []

    def emit(frame):
        got.append((os.path.basename(frame.origin_path), frame.error, time.monotonic()))
        return True

    src = FolderSource(FolderSourceConfig(name="cam", inbox=inbox, stable_seconds=QUICK), max_pixels=10**8,
                       state_dir=tmp_path / "state")
    src.start(emit)
    assert src.wait_backlog(5.0)
    yield inbox, got, src
    src.stop()


def _png_bytes(tmp_path) -> bytes:
    write_png(tmp_path / "whole.png", _part())
    return (tmp_path / "whole.png").read_bytes()


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_writer_pausing_with_the_file_open_gets_one_good_frame(quick_source, tmp_path):
    inbox, got, _ = quick_source
    data = _png_bytes(tmp_path)
    with open(inbox / "paused.png", "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(3 * QUICK)  # longer than stable_seconds, twice over: decoded and failed meanwhile
        fh.write(data[len(data) // 2:])
    assert _wait_for(lambda: got, 5.0)
    time.sleep(2 * QUICK)
    assert [(n, e) for n, e, _ in got] == [("paused.png", None)]


def test_writer_closing_and_reopening_to_append_gets_one_good_frame(quick_source, tmp_path):
    inbox, got, _ = quick_source
    data = _png_bytes(tmp_path)
    with open(inbox / "chunks.png", "wb") as fh:  # closed after the first chunk: "complete" at once
        fh.write(data[: len(data) // 3])
    time.sleep(0.6 * QUICK)
    with open(inbox / "chunks.png", "ab") as fh:
        fh.write(data[len(data) // 3: 2 * len(data) // 3])
    time.sleep(0.6 * QUICK)
    with open(inbox / "chunks.png", "ab") as fh:
        fh.write(data[2 * len(data) // 3:])
    assert _wait_for(lambda: got, 5.0)
    time.sleep(2 * QUICK)
    assert [(n, e) for n, e, _ in got] == [("chunks.png", None)]


def test_cut_off_file_left_unchanged_is_one_error_after_stable_seconds(quick_source, tmp_path):
    inbox, got, _ = quick_source
    data = _png_bytes(tmp_path)
    t0 = time.monotonic()
    with open(inbox / "cut.png", "wb") as fh:
        fh.write(data[: len(data) // 2])
    assert _wait_for(lambda: got, 5.0), "a truncated file must still become an error"
    time.sleep(2 * QUICK)
    ((name, error, when),) = got
    assert name == "cut.png" and "truncated png" in error
    assert when - t0 >= QUICK, "the error came before the file had been unchanged for stable_seconds"


# --- the poison pill: a file that killed the daemon while being decoded (issue 11, item 5) ------

def _marker_source(tmp_path, strikes: int):
    """A file in the inbox and a decode marker naming it, as a run killed while decoding it
    leaves them (simulated: the marker is written here; no process is killed)."""
    import json

    from inspector.sources.folder import frame_key

    inbox, state = tmp_path / "inbox", tmp_path / "state"
    inbox.mkdir()
    state.mkdir()
    write_png(inbox / "killer.png", _part())
    write_png(inbox / "next.png", _part())
    os.utime(inbox / "next.png", (time.time() + 1, time.time() + 1))  # after killer.png in the backlog
    key = frame_key(str(inbox / "killer.png"), os.lstat(inbox / "killer.png"))
    (state / "decoding-cam.json").write_text(json.dumps({"key": key, "strikes": strikes}))
    got = []
    src = FolderSource(FolderSourceConfig(name="cam", inbox=inbox, stable_seconds=QUICK), max_pixels=10**8,
                       state_dir=state)
    src.start(lambda f: got.append((os.path.basename(f.origin_path), f.error, f.image is not None)) or True)
    return src, got, state / "decoding-cam.json"


def test_file_that_killed_the_daemon_twice_while_decoding_is_quarantined_unread(tmp_path):
    src, got, marker = _marker_source(tmp_path, strikes=2)
    try:
        assert _wait_for(lambda: len(got) == 2, 5.0), got
    finally:
        src.stop()
    (killer,) = [g for g in got if g[0] == "killer.png"]
    assert "killed the daemon while decoding" in killer[1] and killer[2] is False, killer
    assert ("next.png", None, True) in got, "the frames behind it are inspected"


def test_file_being_decoded_at_a_single_kill_is_decoded_again(tmp_path):
    src, got, marker = _marker_source(tmp_path, strikes=1)
    try:
        assert _wait_for(lambda: len(got) == 2, 5.0), got
    finally:
        src.stop()
    assert sorted(got) == [("killer.png", None, True), ("next.png", None, True)]
    assert not marker.exists(), "the marker is cleared once decoding is over"
