"""Turning a file's bytes into an image, refusing what should not be decoded.

Every refusal raises FrameError with one line naming the problem and what to do; the daemon
records it as an ``error`` row and quarantines the file.
"""
from __future__ import annotations

import struct
from typing import Optional

import cv2
import numpy as np

MIN_SIDE = 32

# OpenCV prints its own decoder complaints to stderr; we report bad frames ourselves, in one line.
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
except AttributeError:  # older OpenCV builds
    pass


class FrameError(ValueError):
    """This frame cannot be inspected; the message is the error row's reason."""


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
    return None


def _magic_format(data: bytes) -> Optional[str]:
    """The format a file claims by its first bytes, even when its header is unreadable."""
    for magic, fmt in ((b"\x89PNG", "png"), (b"\xff\xd8", "jpeg"), (b"BM", "bmp"), (b"II*\x00", "tiff"),
                       (b"MM\x00*", "tiff")):
        if data.startswith(magic):
            return fmt
    return None


def _has_end_marker(data: bytes, fmt: str) -> bool:
    tail = data[-64:].rstrip(b"\x00")  # some cameras pad files
    if fmt == "jpeg":
        return tail.endswith(b"\xff\xd9")
    return b"IEND" in tail


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

    Raises FrameError for: empty data, an unknown or corrupt format, a declared size over
    ``max_pixels``, a side under 32 pixels, or a bit depth other than 8.
    """
    if not data:
        raise FrameError(f"{name}: empty file (0 bytes); the camera wrote nothing")
    head = header_size(data)
    if head is not None:
        w, h, fmt = head
        if w * h > max_pixels:
            raise FrameError(f"{name}: {fmt} header declares {w}x{h} pixels, over the limit of {max_pixels} "
                             f"(preprocess.max_pixels); refused before decoding")
    if head is not None and head[2] in ("jpeg", "png") and not _has_end_marker(data, head[2]):
        # libjpeg happily "decodes" a cut-off JPEG, filling the rest with grey: refuse it here
        raise FrameError(f"{name}: truncated {head[2]} (no end marker); the file was cut off while being "
                         f"written or copied")
    arr = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(arr, cv2.IMREAD_UNCHANGED)
    if image is None:
        fmt = head[2] if head else _magic_format(data)
        what = f"corrupt or truncated {fmt}" if fmt else "not a readable image (png, jpeg, bmp, tiff)"
        raise FrameError(f"{name}: {what}; check the camera's output format")
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
