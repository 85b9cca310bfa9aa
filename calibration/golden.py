"""The golden set: every readable image in a folder, with the unreadable ones listed."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inspector.decode import FrameError, read_image_file

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass
class GoldenSet:
    names: list[str]
    images: list[np.ndarray]  # BGR or grey uint8, original sizes
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    sha256: str = ""  # over file names and contents: which golden set made a bundle

    def first(self, n: int) -> "GoldenSet":
        """The first ``n`` images only (quick runs and few-shot studies)."""
        return GoldenSet(self.names[:n], self.images[:n], self.skipped, self.sha256)


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def read_golden(folder: str | Path, *, max_pixels: int, progress=None) -> GoldenSet:
    """Read every image in ``folder`` (not recursive). progress: optional callable(n) per file."""
    folder = Path(folder)
    h = hashlib.sha256()
    names, images, skipped = [], [], []
    for p in list_images(folder):
        try:
            img = read_image_file(str(p), max_pixels=max_pixels)
        except FrameError as exc:
            skipped.append((p.name, str(exc)))
        else:
            names.append(p.name)
            images.append(img)
            h.update(p.name.encode())
            h.update(img.tobytes())
        if progress:
            progress(1)
    return GoldenSet(names, images, skipped, h.hexdigest())
