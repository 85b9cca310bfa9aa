"""Bad input gets a clear one-line reason, never a crash or a giant allocation."""
import os
import struct
import zlib

import cv2
import numpy as np
import pytest

from inspector.decode import FrameError, decode_image, header_size, read_image_file

LIMIT = 50_000_000


def png_bytes(img) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


def bomb_png(w: int, h: int) -> bytes:
    """A tiny PNG whose header declares w x h pixels."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_good_images_decode(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    assert decode_image(png_bytes(img), max_pixels=LIMIT).shape == (40, 50, 3)
    grey = img[..., 0].copy()
    assert decode_image(png_bytes(grey), max_pixels=LIMIT).shape == (40, 50)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    assert header_size(jpg)[:2] == (50, 40)
    bmp = cv2.imencode(".bmp", img)[1].tobytes()
    assert header_size(bmp)[:2] == (50, 40)
    tif = cv2.imencode(".tiff", img)[1].tobytes()
    assert header_size(tif)[:2] == (50, 40)


@pytest.mark.parametrize("data,match", [
    (b"", "empty file"),
    (b"hello, I am a text file\n", "not a readable image"),
    (png_bytes(np.zeros((64, 64, 3), np.uint8))[:60], "truncated png"),
    (cv2.imencode(".jpg", np.full((64, 64, 3), 90, np.uint8))[1].tobytes()[:-40], "truncated jpeg"),
    (png_bytes(np.zeros((1, 1, 3), np.uint8)), "too small"),
    (bomb_png(30000, 30000), "30000x30000 pixels, over the limit"),
])
def test_bad_input_reasons(data, match):
    with pytest.raises(FrameError, match=match):
        decode_image(data, max_pixels=LIMIT, name="x.png")


def test_sixteen_bit_tiff_is_refused():
    img16 = (np.random.default_rng(0).random((64, 64)) * 65535).astype(np.uint16)
    data = cv2.imencode(".tiff", img16)[1].tobytes()
    with pytest.raises(FrameError, match="16-bit"):
        decode_image(data, max_pixels=LIMIT)


def test_symlink_is_refused(tmp_path):
    target = tmp_path / "real.png"
    target.write_bytes(png_bytes(np.zeros((64, 64, 3), np.uint8)))
    link = tmp_path / "link.png"
    os.symlink("/etc/shadow", link)
    with pytest.raises(FrameError, match="symbolic link"):
        read_image_file(str(link), max_pixels=LIMIT)
    assert read_image_file(str(target), max_pixels=LIMIT).shape == (64, 64, 3)
