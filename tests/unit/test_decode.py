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


def _part_image() -> np.ndarray:
    return (np.random.default_rng(3).random((48, 64, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
@pytest.mark.parametrize("trailer", [b"\x00" * 16, b"CAMERA-METADATA:serial=1234;exposure=800us\n" * 8,
                                     bytes(range(256)) * 3])
def test_trailing_bytes_after_the_end_marker_are_a_frame(ext, trailer):
    # some cameras append their own metadata after IEND / EOI; the image itself is whole
    data = cv2.imencode(ext, _part_image())[1].tobytes()
    assert decode_image(data + trailer, max_pixels=LIMIT, name="x" + ext).shape == (48, 64, 3)


def test_jpeg_cut_inside_its_scan_is_truncated_even_with_a_whole_thumbnail_before_it():
    # an EXIF-style APP1 segment carrying a complete small JPEG (with its own EOI) ahead of the
    # main image: a cut-off main image must still be refused, not taken for complete
    thumb = cv2.imencode(".jpg", np.full((40, 40, 3), 128, np.uint8))[1].tobytes()
    main = cv2.imencode(".jpg", _part_image())[1].tobytes()
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumb) + 8) + b"Exif\x00\x00" + thumb
    whole = main[:2] + app1 + main[2:]
    assert decode_image(whole, max_pixels=LIMIT).shape == (48, 64, 3)
    with pytest.raises(FrameError, match="truncated jpeg"):
        decode_image(whole[:-len(main) // 3], max_pixels=LIMIT)



# --- image bombs in formats beyond png/jpeg/bmp/tiff --------------------------------------------

BOMB_LIMIT = 10_000_000  # max_pixels for the bomb tests: small, so real bombs stay quick to make


@pytest.fixture(scope="module")
def webp_bomb() -> bytes:
    """A real lossless WebP of a flat colour: 4096x4096 (16.8 Mpx) in about 1 KB."""
    data = cv2.imencode(".webp", np.full((4096, 4096, 3), 77, np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert len(data) < 5000 and data[12:16] == b"VP8L"
    return data


def gif_bomb(w: int, h: int) -> bytes:
    """A real GIF: a w x h logical screen holding one 1x1 LZW-coded image (under 50 bytes).
    OpenCV decodes it onto a w x h canvas (measured: 20000x20000 took 2.7 GB and 18 s)."""
    return (b"GIF89a" + struct.pack("<HHBBB", w, h, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00\x3b")


def test_webp_and_gif_sizes_are_read_from_their_headers(webp_bomb):
    img = _part_image()
    lossy = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 80])[1].tobytes()
    lossless = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert header_size(lossy) == (64, 48, "webp")
    assert header_size(lossless) == (64, 48, "webp")
    assert header_size(webp_bomb) == (4096, 4096, "webp")
    # VP8X (extended: alpha, animation): the canvas size, 24 bits each
    vp8x = b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + b"\x10\x00\x00\x00" \
        + (16383 - 1).to_bytes(3, "little") + (16383 - 1).to_bytes(3, "little")
    assert header_size(vp8x) == (16383, 16383, "webp")
    assert header_size(gif_bomb(20000, 20000)) == (20000, 20000, "gif")
    # the GIF decodes as a GIF at a sane size
    assert decode_image(gif_bomb(40, 40), max_pixels=LIMIT).shape == (40, 40, 3)
    assert decode_image(lossy, max_pixels=LIMIT).shape == (48, 64, 3)


def test_webp_and_gif_bombs_are_refused_before_decoding(webp_bomb):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for data, dims in ((webp_bomb, "4096x4096"), (gif_bomb(20000, 20000), "20000x20000")):
        with pytest.raises(FrameError, match=f"declares {dims} pixels, over the limit.*refused before decoding"):
            decode_image(data, max_pixels=BOMB_LIMIT, name="bomb")
    grew_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mb < 40, f"peak memory grew {grew_mb:.0f} MB: a bomb was decoded"


def test_a_format_whose_size_is_not_read_is_refused_unless_opencv_limits_it():
    # a PGM is decoded by OpenCV, but decode.py does not read its header: in this test process
    # OpenCV's own pixel limit was not set before cv2 was loaded, so the size cannot be bounded
    pgm = b"P5\n64 48\n255\n" + bytes(64 * 48)
    assert cv2.imdecode(np.frombuffer(pgm, np.uint8), cv2.IMREAD_UNCHANGED).shape == (48, 64)
    with pytest.raises(FrameError, match="pnm/pfm image: its size cannot be checked.*refused: send png"):
        decode_image(pgm, max_pixels=LIMIT, name="x.pgm")


_OPENCV_LIMIT_PROBE = r"""
import sys
from inspector.pixel_limit import cap_opencv_pixels
when = sys.argv[1]
if when == "before":
    assert cap_opencv_pixels(10_000_000)
import cv2, numpy as np
if when == "after":
    assert not cap_opencv_pixels(10_000_000)  # cv2 is loaded: too late, and it says so
    import os; os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = "10000000"
from inspector.decode import decode_image, FrameError
big = np.full((4000, 4000), 9, np.uint8)  # 16 Mpx, over the 10 Mpx limit
for ext in (".pgm", ".webp"):
    data = cv2.imencode(ext, big)[1].tobytes()
    try:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        print(ext, "decoded by cv2")
    except cv2.error:
        print(ext, "refused by cv2")
try:
    decode_image(cv2.imencode(".pgm", big)[1].tobytes(), max_pixels=10_000_000, name="big.pgm")
    print("decode_image: decoded")
except FrameError as exc:
    print("decode_image:", exc)
if when == "before":
    print("small:", decode_image(cv2.imencode(".pgm", big[:64, :64])[1].tobytes(), max_pixels=10_000_000).shape)
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_opencv_pixel_limit_is_read_when_cv2_is_loaded(when):
    """What the daemon relies on, measured: OPENCV_IO_MAX_IMAGE_PIXELS set before cv2 is loaded
    makes OpenCV refuse oversized images of any format (here PGM and WebP) before allocating;
    set afterwards it does nothing. (A fresh interpreter, since this one has cv2 loaded.)"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _OPENCV_LIMIT_PROBE, when], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    if when == "before":
        assert ".pgm refused by cv2" in out.stdout and ".webp refused by cv2" in out.stdout, out.stdout
        assert "decode_image: big.pgm: declares more than 10000000 pixels" in out.stdout, out.stdout
        assert "small: (64, 64)" in out.stdout, out.stdout  # other PGMs still decode
    else:
        assert ".pgm decoded by cv2" in out.stdout and ".webp decoded by cv2" in out.stdout, out.stdout
        assert "decode_image: big.pgm: pnm/pfm image: its size cannot be checked" in out.stdout, out.stdout
