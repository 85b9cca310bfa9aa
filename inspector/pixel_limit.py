"""OpenCV's own decompression-bomb limit, set to ``preprocess.max_pixels``.

OpenCV refuses, before allocating anything, an image whose header declares more pixels than
``OPENCV_IO_MAX_IMAGE_PIXELS`` — for every format it decodes (GIF, WebP, AVIF, JPEG 2000, PNM,
Sun raster, ...), including those whose header ``inspector.decode`` does not read. It reads the
variable once, when cv2 is loaded (measured on OpenCV 5.0: setting it afterwards changes nothing;
tests/unit/test_decode.py checks both), so the daemon sets it before anything imports cv2.
This module must not import cv2.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"

_capped: Optional[int] = None  # the limit OpenCV was loaded with, when we set it


def cap_opencv_pixels(max_pixels: int) -> bool:
    """Make OpenCV refuse images over ``max_pixels``. Takes effect only before cv2 is imported;
    returns whether OpenCV's limit is now known to be at most ``max_pixels``."""
    global _capped
    if "cv2" not in sys.modules:
        os.environ[ENV] = str(int(max_pixels))
        _capped = int(max_pixels)
    return _capped is not None and _capped <= max_pixels


def opencv_pixel_limit() -> Optional[int]:
    """OpenCV's pixel limit if this process set it before loading cv2, else None (unknown)."""
    return _capped
