"""Turning a file's bytes into an image, refusing what should not be decoded.

Every refusal raises FrameError with one line naming the problem and what to do; the daemon
records it as an ``error`` row and quarantines the file.
"""
from __future__ import annotations

import re
import struct
from typing import Optional

import cv2
import numpy as np

from inspector.pixel_limit import opencv_pixel_limit

MIN_SIDE = 32
ACCEPTED = "png, jpeg, bmp, tiff, webp, gif"

# OpenCV prints its own decoder complaints to stderr; we report bad frames ourselves, in one line.
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # older OpenCV builds
    pass


class FrameError(ValueError):
    """This frame cannot be inspected; the message is the error row's reason."""


class IncompleteFrameError(FrameError):
    """Empty, cut off or unreadable: what a file still being written looks like. The folder
    source retries it; only when it stays so, unchanged, is it an error row."""


def header_size(data: bytes) -> Optional[tuple[int, int, str]]:
    """(width, height, format) read from the header without decoding, or None if unknown.

    Lets us refuse a decompression bomb (a tiny file declaring 30000x30000) before OpenCV
    allocates gigabytes for it.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return w, h, "png"
    if data[:2] == b"BM" and len(data) >= 26:
        w, h = struct.unpack("<ii", data[18:26])
        return abs(w), abs(h), "bmp"
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        # the logical screen: OpenCV decodes onto a canvas of that size (and refuses frames
        # that do not fit in it), so it is what a GIF costs in memory
        w, h = struct.unpack("<HH", data[6:10])
        return w, h, "gif"
    return None


def _magic_format(data: bytes) -> Optional[str]:
    """The format a file claims by its first bytes, even when its header is unreadable."""
    for magic, fmt in ((b"\x89PNG", "png"), (b"\xff\xd8", "jpeg"), (b"BM", "bmp"), (b"II*\x00", "tiff"),
                       (b"MM\x00*", "tiff"), (b"GIF8", "gif")):
        if data.startswith(magic):
            return fmt
    return "webp" if data[:4] == b"RIFF" and data[8:12] == b"WEBP" else None


# Formats this OpenCV build also decodes but whose header we do not read: bounded only by
# OpenCV's own pixel limit (inspector.pixel_limit), refused where that is not in force.
_OTHER_DECODABLE = ((re.compile(rb"P[1-7Ff]\s"), "pnm/pfm"), (re.compile(rb"\x59\xa6\x6a\x95"), "sun raster"),
                    (re.compile(rb"#\?(RADIANCE|RGBE)"), "radiance hdr"),
                    (re.compile(rb"(\x00\x00\x00\x0cjP  \r\n\x87\n|\xff\x4f\xff\x51)"), "jpeg 2000"),
                    (re.compile(rb"....ftyp(avif|avis|heic|heix|mif1|msf1)", re.S), "avif/heif"),
                    (re.compile(rb"\x76\x2f\x31\x01"), "openexr"))


def _other_format(data: bytes) -> Optional[str]:
    for magic, fmt in _OTHER_DECODABLE:
        if magic.match(data):
            return fmt
    return None


def _webp_size(data: bytes) -> Optional[tuple[int, int, str]]:
    """Canvas size from the first chunk: VP8X (extended, animations), VP8L (lossless), VP8 (lossy)."""
    chunk = data[12:16]
    try:
        if chunk == b"VP8X":
            w = int.from_bytes(data[24:27], "little") + 1
            h = int.from_bytes(data[27:30], "little") + 1
            return w, h, "webp"
        if chunk == b"VP8L" and data[20] == 0x2F:
            bits = int.from_bytes(data[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, "webp"
        if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
            w, h = struct.unpack("<HH", data[26:30])
            return w & 0x3FFF, h & 0x3FFF, "webp"
    except (IndexError, struct.error):
        return None
    return None


def _png_complete(data: bytes) -> bool:
    """Every chunk whole, up to IEND (bytes after IEND are ignored: some cameras append metadata)."""
    i, n = 8, len(data)
    while i + 12 <= n:
        (length,) = struct.unpack(">I", data[i:i + 4])
        kind = data[i + 4:i + 8]
        i += 12 + length
        if kind == b"IEND":
            return i <= n
    return False


# in a JPEG scan 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else ends it
_JPEG_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_complete(data: bytes) -> bool:
    """Segments and scans walked up to the image's own EOI. An embedded thumbnail's EOI (inside
    an APP segment) does not count, and bytes after EOI are ignored."""
    i, n = 2, len(data)
    while i + 1 < n:
        if data[i] != 0xFF:
            i += 1  # stray bytes between segments: libjpeg skips them too
            continue
        marker = data[i + 1]
        if marker == 0xD9:
            return True
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD8:
            i += 1 if marker == 0xFF else 2
            continue
        if i + 4 > n:
            return False
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            m = _JPEG_MARKER_AFTER_SCAN.search(data, i)
            if m is None:
                return False
            i = m.start()
    return False


def _jpeg_size(data: bytes) -> Optional[tuple[int, int, str]]:
    i = 2
    n = len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        # SOF0..SOF15 except DHT (C4), JPG (C8), DAC (CC) carry the frame size
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h, "jpeg"
        i += 2 + seg_len
    return None


def _tiff_size(data: bytes) -> Optional[tuple[int, int, str]]:
    endian = "<" if data[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack(endian + "I", data[4:8])
        (count,) = struct.unpack(endian + "H", data[ifd:ifd + 2])
        w = h = None
        for k in range(count):
            off = ifd + 2 + 12 * k
            tag, typ = struct.unpack(endian + "HH", data[off:off + 4])
            fmt = "H" if typ == 3 else "I"
            (val,) = struct.unpack(endian + fmt, data[off + 8:off + 8 + struct.calcsize(fmt)])
            if tag == 256:
                w = val
            elif tag == 257:
                h = val
        if w and h:
            return w, h, "tiff"
    except struct.error:
        return None
    return None


def decode_image(data: bytes, *, max_pixels: int, name: str = "frame") -> np.ndarray:
    """Decode image bytes to BGR uint8 HxWx3 or grey uint8 HxW.

    Raises FrameError for: a declared size over ``max_pixels`` (read from the header, or
    OpenCV's own limit for formats whose header we do not read), a side under 32 pixels, or a
    bit depth other than 8; IncompleteFrameError for empty, truncated or unreadable data.
    """
    if not data:
        raise IncompleteFrameError(f"{name}: empty file (0 bytes); the camera wrote nothing")
    head = header_size(data)
    if head is not None:
        w, h, fmt = head
        if w * h > max_pixels:
            raise FrameError(f"{name}: {fmt} header declares {w}x{h} pixels, over the limit of {max_pixels} "
                             f"(preprocess.max_pixels); refused before decoding")
    elif _magic_format(data) in ("webp", "gif"):
        raise IncompleteFrameError(f"{name}: corrupt or truncated {_magic_format(data)} (no readable size in its "
                                   f"header); check the camera's output format")
    else:
        other = _other_format(data)
        limit = opencv_pixel_limit()
        if other is not None and (limit is None or limit > max_pixels):
            raise FrameError(f"{name}: {other} image: its size cannot be checked against preprocess.max_pixels "
                             f"before decoding (decompression bombs); refused: send {ACCEPTED}")
    complete = {"jpeg": _jpeg_complete, "png": _png_complete}.get(head[2] if head else "")
    if complete is not None and not complete(data):
        # libjpeg happily "decodes" a cut-off JPEG, filling the rest with grey: refuse it here
        raise IncompleteFrameError(f"{name}: truncated {head[2]} (no end marker); the file was cut off while "
                                   f"being written or copied")
    arr = np.frombuffer(data, dtype=np.uint8)
    try:
        image = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
            raise FrameError(f"{name}: declares more than {opencv_pixel_limit()} pixels (preprocess.max_pixels); "
                             f"refused before decoding") from None
        raise IncompleteFrameError(f"{name}: cannot be decoded ({_last_line(exc)}); check the camera's output "
                                   f"format") from None
    if image is None:
        fmt = head[2] if head else (_magic_format(data) or _other_format(data))
        what = f"corrupt or truncated {fmt}" if fmt else f"not a readable image ({ACCEPTED})"
        raise IncompleteFrameError(f"{name}: {what}; check the camera's output format")
    if image.dtype != np.uint8:
        raise FrameError(f"{name}: {image.dtype} pixels ({image.dtype.itemsize * 8}-bit); the model expects 8-bit "
                         f"images: set the camera to 8-bit output")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim != 2 and not (image.ndim == 3 and image.shape[2] == 3):
        raise FrameError(f"{name}: unsupported image layout {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise FrameError(f"{name}: {w}x{h} pixels is too small to inspect (minimum {MIN_SIDE} per side)")
    if h * w > max_pixels:
        raise FrameError(f"{name}: {w}x{h} pixels is over the limit of {max_pixels} (preprocess.max_pixels)")
    return np.ascontiguousarray(image)


def _last_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1][:200] if lines else type(exc).__name__


def read_image_file(path: str, *, max_pixels: int, max_bytes: int = 512 * 1024 * 1024) -> np.ndarray:
    """Read and decode one image file (see decode_image). Refuses symlinks and non-regular files."""
    import os
    import stat

    name = os.path.basename(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FrameError(f"{name}: vanished before it could be read") from None
    if stat.S_ISLNK(st.st_mode):
        raise FrameError(f"{name}: is a symbolic link; inbox files must be regular files (refused for safety)")
    if not stat.S_ISREG(st.st_mode):
        raise FrameError(f"{name}: not a regular file")
    if st.st_size > max_bytes:
        raise FrameError(f"{name}: {st.st_size} bytes is over the {max_bytes}-byte limit")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FrameError(f"{name}: cannot open ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read()
    return decode_image(data, max_pixels=max_pixels, name=name)
