"""The golden set: every readable image in a folder, with the unreadable ones listed."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
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


def _reader_threads() -> int:
    # OpenCV decodes without the GIL: one thread per core (at least 2: reading overlaps decoding)
    return max(2, min(8, os.cpu_count() or 1))


def read_golden(folder: str | Path, *, max_pixels: int, progress=None) -> GoldenSet:
    """Read every image in ``folder`` (not recursive), decoding on a few threads (bottle's 209
    900x900 PNGs: 5-6 s on one thread of an AVX2 EPYC). progress: optional callable(n) per file."""
    folder = Path(folder)
    h = hashlib.sha256()
    names, images, skipped = [], [], []

    def read(path: Path):
        try:
            return read_image_file(str(path), max_pixels=max_pixels), None
        except FrameError as exc:
            return None, str(exc)

    paths = list_images(folder)
    with ThreadPoolExecutor(max_workers=_reader_threads(), thread_name_prefix="golden-read") as pool:
        for p, (img, error) in zip(paths, pool.map(read, paths)):  # in file order
            if error is not None:
                skipped.append((p.name, error))
            else:
                names.append(p.name)
                images.append(img)
                h.update(p.name.encode())
                h.update(np.ascontiguousarray(img).data)  # the pixels, without a copy
            if progress:
                progress(1)
    return GoldenSet(names, images, skipped, h.hexdigest())
