"""move_file across filesystems when the copy runs out of space (issue 11, item 11): the
``.part`` file is removed and the error reaches the caller (which retries), the inbox file stays.

The real case, a full tmpfs as done/, runs in tests/integration/test_daemon_disk_full.py where
mounting is allowed. Here the other filesystem and the full disk are simulated at the two calls
that see them (os.link says EXDEV, the copy writes part of the file then fails with ENOSPC), so
this runs everywhere."""
from __future__ import annotations

import errno
import os
import shutil

import pytest

from inspector import outputs
from inspector.outputs import move_file


@pytest.fixture
def other_filesystem_that_fills_up(monkeypatch):
    def link(src, dst, *, follow_symlinks=True):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), src, None, dst)

    real_copy = shutil.copyfile

    def copy_until_full(src, dst, *, follow_symlinks=True):
        with open(src, "rb") as fh, open(dst, "wb") as out:
            out.write(fh.read(10))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(outputs.os, "link", link)
    monkeypatch.setattr(outputs.shutil, "copyfile", copy_until_full)
    return real_copy


def test_full_disk_on_cross_filesystem_move_leaves_no_part_file(tmp_path, other_filesystem_that_fills_up):
    src = tmp_path / "inbox" / "frame.png"
    src.parent.mkdir()
    src.write_bytes(b"x" * 1000)
    dest = tmp_path / "done" / "2024-01-01" / "frame.png"
    with pytest.raises(OSError) as exc:
        move_file(str(src), dest)
    assert exc.value.errno == errno.ENOSPC
    assert src.read_bytes() == b"x" * 1000, "the frame stays in the inbox"
    assert os.listdir(dest.parent) == [], "neither the .part file nor a partial frame is left"


def test_cross_filesystem_move_works_once_space_is_back(tmp_path, monkeypatch, other_filesystem_that_fills_up):
    src = tmp_path / "frame.png"
    src.write_bytes(b"y" * 1000)
    dest = tmp_path / "done" / "frame.png"
    with pytest.raises(OSError):
        move_file(str(src), dest)
    monkeypatch.setattr(outputs.shutil, "copyfile", other_filesystem_that_fills_up)  # space is back
    assert move_file(str(src), dest) == dest
    assert dest.read_bytes() == b"y" * 1000 and not src.exists()
    assert os.listdir(dest.parent) == ["frame.png"]
