"""Hostile and broken files in the inbox of the real daemon process.

Each bad file must give exactly one ``error`` row whose reason names the problem, end up in
quarantine/ (a symlink itself, never its target), and leave the daemon running: a good frame
dropped afterwards is still inspected. One daemon serves the whole module, so the cases also
prove that the daemon survives all of them in a row.
"""
from __future__ import annotations

import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from tests.integration.daemon_helpers import (Daemon, drop_bytes, drop_image, encode, make_workspace, rows,
                                              wait_for, wait_row_named)
from tests.unit.test_decode import gif_bomb


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(side: int = 30000) -> bytes:
    """A *valid* 8-bit grey PNG of side x side black pixels: ~0.9 MB on disk, 900 MB decoded."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))


def _part(seed: int = 5) -> np.ndarray:
    from calibration.synthetic import make_part

    return make_part(np.random.default_rng(seed), size=128)


def _tiff16() -> bytes:
    img = (_part().astype(np.uint16) * 257)
    return encode(img, ".tiff")


# name -> (how to put it in the inbox, words the error reason must contain)
def _cases():
    good_png = encode(_part())
    good_jpg = encode(_part(), ".jpg")
    return {
        "zero_byte": (lambda inbox: drop_bytes(inbox, "empty.png", b""), ["empty", "0 bytes"]),
        "truncated_png": (lambda inbox: drop_bytes(inbox, "cut.png", good_png[: len(good_png) // 2]),
                          ["truncated png"]),
        "truncated_jpeg": (lambda inbox: drop_bytes(inbox, "cut.jpg", good_jpg[: len(good_jpg) // 2]),
                           ["truncated jpeg"]),
        "text_named_png": (lambda inbox: drop_bytes(inbox, "notes.png", b"this is not an image\n" * 20),
                           ["not a readable image"]),
        "tiff_16bit": (lambda inbox: drop_bytes(inbox, "deep.tiff", _tiff16()), ["16-bit", "8-bit"]),
        "one_pixel": (lambda inbox: drop_image(inbox, "dot.png", np.zeros((1, 1, 3), np.uint8)),
                      ["1x1", "too small"]),
        "bomb_30000": (lambda inbox: drop_bytes(inbox, "bomb.png", png_bomb()),
                       ["30000x30000", "refused before decoding"]),
        "symlink_shadow": (lambda inbox: os.symlink("/etc/shadow", inbox / "shadow.png") or inbox / "shadow.png",
                           ["symbolic link"]),
        "newline_name": (lambda inbox: drop_bytes(inbox, "line1\nline2.png", good_png), ["newline"]),
        "dotdot_name": (lambda inbox: drop_bytes(inbox, "cam..\\..\\evil.png", good_png), ["'..'"]),
        # image bombs in formats whose header the first check did not read (issue 11, item 5)
        "gif_bomb_20000": (lambda inbox: drop_bytes(inbox, "bomb.gif", gif_bomb(20000, 20000)),
                           ["gif header declares 20000x20000", "refused before decoding"]),
        # a format decode.py reads no header of: bounded by OpenCV's own limit, which the daemon sets
        "pgm_bomb_20000": (lambda inbox: drop_bytes(inbox, "bomb.pgm", b"P5\n20000 20000\n255\n" + bytes(4096)),
                           ["declares more than 100000000 pixels", "refused before decoding"]),
        # not in the list: a name that is not UTF-8 cannot even be stored as text
        "non_utf8_name": (lambda inbox: drop_bytes(inbox, os.fsdecode(b"cam-\xff\xfe.png"), good_png),
                          ["not valid UTF-8"]),
    }


CASES = list(_cases())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, bundle_dir):
    ws = make_workspace(tmp_path_factory.mktemp("bad-input"), bundle_dir)
    d = Daemon(ws).start().wait_ready()
    yield d
    try:
        assert d.terminate() == 0, d.tail()
    finally:
        d.stop()


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


@pytest.mark.parametrize("case", CASES)
def test_bad_file_is_quarantined_with_one_error_row(daemon: Daemon, case: str):
    ws = daemon.ws
    put, words = _cases()[case]
    before = {r["id"] for r in rows(ws.db)}
    hwm_before = _vm_hwm_kb(daemon.pid)
    path = put(ws.inbox)
    t0 = time.monotonic()  # after put(): making the PNG bomb alone takes seconds on a busy machine
    name = path.name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # as stored

    named = wait_row_named(ws, name, 30, daemon)
    took = time.monotonic() - t0
    mine = [r for r in named if r["id"] not in before]
    assert len(mine) == 1, mine
    row = mine[0]
    assert row["verdict"] == "error", row
    reason = row["error_reason"] or ""
    for w in words:
        assert w in reason, f"reason {reason!r} should mention {w!r}"
    assert "\n" not in reason, f"reason must be one line: {reason!r}"

    # out of the inbox, into quarantine (the row says where), nothing written anywhere else
    wait_for(lambda: not os.path.lexists(path), 10, f"{name!r} to leave the inbox", daemon)
    stored = Path(row["stored_path"])
    assert stored.parent.parent == ws.quarantine, stored
    assert os.path.lexists(stored), stored
    assert "\n" not in stored.name and "\\" not in stored.name and stored.name not in (".", "..")
    if case == "symlink_shadow":
        assert stored.is_symlink() and os.readlink(stored) == "/etc/shadow", "the link itself is quarantined"
        assert Path("/etc/shadow").is_file() and not Path("/etc/shadow").is_symlink(), "target untouched"
    if case in ("bomb_30000", "gif_bomb_20000", "pgm_bomb_20000"):
        assert took < 10, f"bomb took {took:.1f}s to refuse"
        grew_mb = (_vm_hwm_kb(daemon.pid) - hwm_before) / 1024
        assert grew_mb < 100, f"peak RSS grew {grew_mb:.0f} MB: the bomb was decoded"

    # the daemon is alive and still inspects a good frame
    good = drop_image(ws.inbox, f"good-after-{case}.png", _part(seed=hash(case) % 1000))
    (g,) = wait_row_named(ws, good.name, 30, daemon)
    assert g["verdict"] in ("pass", "fail"), g
    assert daemon.alive()


def test_file_that_killed_the_daemon_while_decoding_is_quarantined_at_the_next_start(tmp_path, bundle_dir):
    """The poison pill, simulated honestly: no daemon is really killed by a bomb here (OpenCV's
    limit now stops those before they allocate). Instead the state a run killed while decoding a
    file leaves behind is made by hand — the file in the inbox and the decode marker naming it,
    at its second such death — and the real daemon is started on it. Before the fix the daemon
    decoded that file again at every start (a crash loop under a memory limit)."""
    import json

    from inspector.sources.folder import POISON_STRIKES, frame_key

    ws = make_workspace(tmp_path, bundle_dir)
    killer = drop_image(ws.inbox, "killer.png", _part(seed=11))
    later = time.time() + 5
    good = drop_image(ws.inbox, "after-killer.png", _part(seed=12))
    os.utime(good, (later, later))  # behind the killer in the backlog
    key = frame_key(str(killer), os.lstat(killer))
    marker = ws.db.parent / "decoding-cam.json"  # the state folder: next to the SQLite database
    marker.write_text(json.dumps({"key": key, "strikes": POISON_STRIKES}))
    d = Daemon(ws).start()
    try:
        (row,) = wait_row_named(ws, "killer.png", 60, d)
        assert row["verdict"] == "error" and "killed the daemon while decoding" in row["error_reason"], row
        assert Path(row["stored_path"]).parent.parent == ws.quarantine
        (g,) = wait_row_named(ws, "after-killer.png", 30, d)
        assert g["verdict"] in ("pass", "fail"), g
        assert "will be quarantined" in d.log_text()
        wait_for(lambda: not marker.exists(), 10, "the decode marker to be cleared", d)
        assert d.terminate() == 0, d.tail()
    finally:
        d.stop()
