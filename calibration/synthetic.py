"""Synthetic parts drawn with OpenCV, for the demo and the tests: a machined plate with four
holes and a slot, on a dark belt, with small pose, lighting and noise variation. Defects:
a scratch, a spot (dark or bright), a missing hole."""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

DEFECTS = ("scratch", "spot", "missing_hole")


def make_part(rng: np.random.Generator, size: int = 256, defect: Optional[str] = None,
              grey: bool = False) -> np.ndarray:
    """One BGR uint8 [size, size, 3] image (grey [size, size] if ``grey``)."""
    s = size / 256.0
    img = np.full((size, size, 3), 40, np.uint8)
    img[:] = (38 + rng.integers(-3, 4), 40 + rng.integers(-3, 4), 44 + rng.integers(-3, 4))
    # belt texture: faint horizontal stripes
    stripes = (np.sin(np.arange(size) / (3.0 * s)) * 3).astype(np.int16)
    img = np.clip(img.astype(np.int16) + stripes[:, None, None], 0, 255).astype(np.uint8)
    cx = size / 2 + rng.normal(0, 1.5 * s)
    cy = size / 2 + rng.normal(0, 1.5 * s)
    angle = rng.normal(0, 1.0)
    part = np.zeros_like(img)
    w, h = 150 * s, 110 * s
    box = cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)
    shade = int(170 + rng.integers(-8, 9))
    cv2.fillConvexPoly(part, box, (shade, shade, shade + 6), lineType=cv2.LINE_AA)
    mask = part[..., 0] > 0
    # brushed-metal grain inside the plate
    grain = cv2.GaussianBlur(rng.normal(0, 6, (size, size)).astype(np.float32), (0, 0), sigmaX=6 * s, sigmaY=0.6 * s)
    part = np.clip(part.astype(np.float32) + grain[..., None] * mask[..., None], 0, 255).astype(np.uint8)
    img[mask] = part[mask]
    rot = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)

    def at(dx: float, dy: float) -> tuple[int, int]:
        p = rot @ np.array([cx + dx * s, cy + dy * s, 1.0])
        return int(round(p[0])), int(round(p[1]))

    holes = [(-50, -32), (50, -32), (-50, 32), (50, 32)]
    missing = int(rng.integers(0, 4)) if defect == "missing_hole" else -1
    for k, (dx, dy) in enumerate(holes):
        if k != missing:
            cv2.circle(img, at(dx, dy), int(9 * s), (30, 30, 34), -1, cv2.LINE_AA)
            cv2.circle(img, at(dx, dy), int(9 * s), (120, 120, 126), max(1, int(s)), cv2.LINE_AA)
    cv2.line(img, at(-22, 0), at(22, 0), (35, 35, 40), int(8 * s), cv2.LINE_AA)
    if defect == "scratch":
        x0, y0 = at(rng.uniform(-40, 0), rng.uniform(-20, 20))
        x1, y1 = x0 + int(rng.uniform(25, 45) * s), y0 + int(rng.uniform(-15, 15) * s)
        cv2.line(img, (x0, y0), (x1, y1), (235, 235, 240), max(2, int(2 * s)), cv2.LINE_AA)
    elif defect == "spot":
        c = at(rng.uniform(-30, 30), rng.uniform(-15, 15))
        colour = (60, 45, 30) if rng.random() < 0.5 else (230, 230, 235)
        cv2.circle(img, c, max(4, int(rng.uniform(5, 8) * s)), colour, -1, cv2.LINE_AA)
    # lighting gradient and sensor noise
    gain = 1.0 + rng.normal(0, 0.02)
    noise = rng.normal(0, 2.0, img.shape)
    img = np.clip(img.astype(np.float32) * gain + noise, 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if grey else img
