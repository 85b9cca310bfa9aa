"""Frames and heatmaps for the pages, only from the configured folders.

A picture is asked for by inspection id and kind (``frame`` = the stored frame, ``heatmap``), never
by path: the path comes from the database row, and is served only when its real path (symlinks
resolved) lies inside one of the allowed folders (output.done_dir, quarantine_dir, heatmap_dir).
A row pointing elsewhere (``../``, an absolute path, a symlink out) gets 404, like a missing file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp",
               ".tif": "image/tiff", ".tiff": "image/tiff", ".webp": "image/webp"}
THUMB_SIDE = 360


class MediaRoots:
    def __init__(self, roots: Iterable[os.PathLike | str]):
        self.roots = [Path(os.path.realpath(r)) for r in roots if r]

    def resolve(self, stored: Optional[str]) -> Optional[Path]:
        """The file at ``stored`` when it is an image inside an allowed folder, else None."""
        if not stored or "\0" in stored:
            return None
        real = Path(os.path.realpath(stored))
        if real.suffix.lower() not in IMAGE_TYPES:
            return None
        if not any(real == r or r in real.parents for r in self.roots):
            return None
        return real if real.is_file() else None


def thumbnail_png(path: Path, side: int = THUMB_SIDE) -> Optional[bytes]:
    """A PNG at most ``side`` pixels on its longer edge (the live page's cards), or None."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    s = min(1.0, side / max(h, w))
    if s < 1.0:
        img = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", img)
    return buf.tobytes() if ok else None
