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
