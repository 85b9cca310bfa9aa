"""Heatmap overlays: the anomaly map in colour over the original frame, regions boxed, written
atomically (temporary file + fsync + os.replace) so a crash never leaves half a PNG."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from engines.atomicfile import atomic_write_bytes
from inspector.preprocess import map_to_original
from inspector.types import Region, RoiTransform

MAX_SIDE = 1600  # overlays of huge frames are downscaled; they are for people, not measurement
TEMP_PREFIX = ".tmp-"  # write_png_atomic's temporary files (hidden: history/retention never see them)


def render_overlay(image: np.ndarray, pixel_map: np.ndarray, transform: RoiTransform, pixel_threshold: float,
                   regions: Sequence[Region] = (), label: Optional[str] = None) -> np.ndarray:
    """image: BGR HxWx3 or grey HxW uint8 (original); pixel_map: [H, W] network-input coordinates.
    The colour scale is fixed relative to the pixel threshold (0.6x .. 1.4x, the threshold in the
    middle, red above) so colours mean the same on every frame; scores well below the threshold
    stay transparent so the part itself remains visible. Returns BGR uint8."""
    base = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image.copy()
    full = map_to_original(pixel_map, transform)
    thr = max(float(pixel_threshold), 1e-6)
    norm = np.clip((full - 0.6 * thr) / (0.8 * thr), 0.0, 1.0)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = (np.clip((norm - 0.25) / 0.25, 0.0, 1.0) * 0.65)[..., None]
    out = (base.astype(np.float32) * (1 - alpha) + colour.astype(np.float32) * alpha).astype(np.uint8)
    thick = max(1, round(max(out.shape[:2]) / 400))
    for r in regions:
        cv2.rectangle(out, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), (0, 0, 255), thick)
    side = max(out.shape[:2])
    if side > MAX_SIDE:
        f = MAX_SIDE / side
        out = cv2.resize(out, (round(out.shape[1] * f), round(out.shape[0] * f)), interpolation=cv2.INTER_AREA)
    if label:
        fs = max(0.4, out.shape[1] / 900)
        cv2.putText(out, label, (8, int(24 * fs) + 4), cv2.FONT_HERSHEY_SIMPLEX, fs, (0, 0, 0), 3 * thick, cv2.LINE_AA)
        cv2.putText(out, label, (8, int(24 * fs) + 4), cv2.FONT_HERSHEY_SIMPLEX, fs, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def write_png_atomic(path: str | Path, image: np.ndarray) -> Path:
    """Encode to PNG in memory, write to a temporary file in the same folder, fsync, rename."""
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    return atomic_write_bytes(path, buf.tobytes(), prefix=TEMP_PREFIX, suffix=".png")


def remove_partial_writes(heatmap_dir: str | Path) -> int:
    """Delete temporary files a killed daemon left mid-write (``.tmp-*.png`` under
    ``heatmap_dir``); returns how many. Call at start-up only: the running daemon is the only
    writer of its heatmap folder, so at start none of them can belong to a live write."""
    removed = 0
    for dirpath, _dirs, files in os.walk(heatmap_dir):
        for name in files:
            if name.startswith(TEMP_PREFIX) and name.endswith(".png"):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed
