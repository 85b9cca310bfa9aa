"""Pose normalisation for parts that turn and move freely (``preprocess.align.motion: pose``).

A screw lying at any angle anywhere in the view is, to a patch model that learnt it at a few
angles, mostly "a pose never seen". Here each frame's part is found (Otsu foreground, the
minority side; its largest component), its principal axis is measured from the image moments,
and the frame is resampled into a canonical box: the axis horizontal, the middle of the part's
extent at the box centre, the box just large enough for the golden parts (most of the background
is cut away, so the model's layouts and regions are about the part, not the floor). The 180°
ambiguity of an axis is settled by correlation with the golden reference view (the median of the
canonical golden images); without one (building it) the wider end goes left.

Only elongated parts have an axis: a round or square part's moments give a noisy angle, so a
part whose length/width ratio is under ``MIN_ELONGATION`` is refused (calibration) or an error
verdict (a frame), as is a frame with no part or one that matches the reference poorly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from inspector.decode import FrameError

MIN_ELONGATION = 1.5  # length / width (from the second moments) below which the axis is noise
MIN_AREA = 0.002  # the part's share of the image below which nothing counts as a part
LONGER = 1.05  # a part this much longer than the golden parts' box is refused, not cut to fit
END = 0.2  # share of the length at each end whose width tells the head from the tip


@dataclass(frozen=True)
class Measure:
    """The part in an image: the middle of its extent, its axis (unit vector towards the end that
    goes right in the canonical box), its length and width in pixels, and its elongation."""

    cx: float
    cy: float
    ax: float
    ay: float
    length: float
    width: float
    elongation: float


def part_mask(grey: np.ndarray) -> Optional[np.ndarray]:
    """float32 grey [0, 1] -> uint8 mask of the largest foreground component (the minority side
    of an Otsu threshold), or None when there is none of any size."""
    u8 = np.clip(grey * 255.0, 0, 255).astype(np.uint8)
    _, m = cv2.threshold(cv2.GaussianBlur(u8, (3, 3), 0), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if m.mean() > 0.5:
        m = 1 - m
    # close first: a bright defect across a thin part must not cut it in two; then drop specks
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m)
    if n < 2:
        return None
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[big, cv2.CC_STAT_AREA] < MIN_AREA * m.size:
        return None
    return (lab == big).astype(np.uint8)


def measure(grey: np.ndarray, m: Optional[np.ndarray] = None) -> Optional[Measure]:
    """The part's pose in a float32 grey image, or None when no part is found. ``m``: its
    part_mask, when the caller has it."""
    m = part_mask(grey) if m is None else m
    if m is None:
        return None
    mo = cv2.moments(m, binaryImage=True)
    cx, cy = mo["m10"] / mo["m00"], mo["m01"] / mo["m00"]
    theta = 0.5 * math.atan2(2.0 * mo["mu11"], mo["mu20"] - mo["mu02"])
    lam = np.linalg.eigvalsh(np.array([[mo["mu20"], mo["mu11"]], [mo["mu11"], mo["mu02"]]]))
    elong = math.sqrt(lam[1] / max(lam[0], 1e-9))
    c, s = math.cos(theta), math.sin(theta)
    ys, xs = np.nonzero(m)
    u = (xs - cx) * c + (ys - cy) * s  # along the axis
    v = -(xs - cx) * s + (ys - cy) * c  # across it
    u0, u1 = float(u.min()), float(u.max())
    v0, v1 = (float(x) for x in np.percentile(v, [0.5, 99.5]))
    span = max(u1 - u0, 1e-6)

    def end_width(sel: np.ndarray) -> float:
        return float(np.subtract(*np.percentile(v[sel], [98, 2]))) if sel.any() else 0.0

    # the centroid leans to the heavy end; the middle of the extent keeps both ends in the box
    um, vm = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
    mx, my = cx + um * c - vm * s, cy + um * s + vm * c
    sign = -1.0 if end_width(u > u1 - END * span) > end_width(u < u0 + END * span) else 1.0  # wide end left
    return Measure(mx, my, sign * c, sign * s, u1 - u0, v1 - v0, elong)


def pose_warp(m: Measure, box: tuple[int, int], flip: bool = False) -> np.ndarray:
    """[2, 3] warp with canvas(warp @ [x, y, 1]) = canonical(x, y): the box's centre on the part's
    middle, the box's +x along the part's axis (turned by 180° with ``flip``)."""
    ax, ay = (-m.ax, -m.ay) if flip else (m.ax, m.ay)
    bx, by = (box[0] - 1) / 2.0, (box[1] - 1) / 2.0
    return np.array([[ax, -ay, m.cx - ax * bx + ay * by],
                     [ay, ax, m.cy - ay * bx - ax * by]], np.float32)


def warp_to_box(image: np.ndarray, warp: np.ndarray, box: tuple[int, int],
                part: Optional[np.ndarray] = None) -> np.ndarray:
    """The canvas resampled into the canonical box. Where the box leaves the canvas it shows the
    canvas's background mirrored in, with the part blanked out of it first (a mirrored copy of
    the part's own end at the border would be a defect on every part lying near an edge).
    ``part``: the image's part_mask, when the caller has it."""
    size = (int(box[0]), int(box[1]))
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(image, warp, size, flags=flags, borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.warpAffine(np.ones(image.shape[:2], np.uint8), warp, size,
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
    inside = cv2.erode(inside, np.ones((3, 3), np.uint8))  # the interpolated seam too
    if inside.all():
        return out
    if part is None:
        g = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        part = part_mask(g.astype(np.float32) / 255.0 if g.dtype == np.uint8 else g)
    floor = image
    if part is not None:
        part = cv2.dilate(part, np.ones((7, 7), np.uint8)) > 0
        if not part.all():
            floor = _blank(image, part)
    back = cv2.warpAffine(floor, warp, size, flags=flags, borderMode=cv2.BORDER_REFLECT_101)
    keep = inside > 0 if image.ndim == 2 else (inside > 0)[..., None]
    return np.where(keep, out, back)


def _blank(image: np.ndarray, part: np.ndarray) -> np.ndarray:
    """``image`` with the ``part`` pixels replaced by the floor around them (a wide mean of the
    floor pixels only, so the floor's shading carries on; a flat fill shows as a patch)."""
    k = max(15, min(part.shape) // 4) | 1
    free = (~part).astype(np.float32)
    x = image.astype(np.float32)
    num = cv2.boxFilter(x * (free if x.ndim == 2 else free[..., None]), -1, (k, k), normalize=False)
    den = cv2.boxFilter(free, -1, (k, k), normalize=False)
    est = num / np.maximum(den if x.ndim == 2 else den[..., None], 1e-6)
    far = den < 1.0  # no floor within the window: the floor's median
    if far.any():
        est[far] = np.median(x[~part], axis=0)
    keep = part if x.ndim == 2 else part[..., None]
    return np.where(keep, est, x).astype(image.dtype)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / max(math.sqrt(float((a * a).sum()) * float((b * b).sum())), 1e-12))


class PoseAligner:
    """Canonicalises canvas-size images into the reference's box (float32 grey [bh, bw]);
    ``reference`` None (only while building it): the wider end goes left, no correlation check."""

    def __init__(self, reference: Optional[np.ndarray], min_correlation: float, box: Optional[tuple[int, int]] = None):
        self.reference = None if reference is None else np.ascontiguousarray(reference, np.float32)
        self.box = box if reference is None else (reference.shape[1], reference.shape[0])
        if self.box is None:
            raise ValueError("PoseAligner needs a reference or a box size")
        self.min_correlation = min_correlation

    def estimate(self, grey: np.ndarray) -> np.ndarray:
        """float32 grey canvas -> warp [2, 3] (canonical box -> canvas). FrameError when there is
        no part, the part has no axis, or it matches the golden reference poorly."""
        mask = part_mask(grey)  # once: the measure and both ends' views below use it
        m = measure(grey, mask)
        if m is None:
            raise FrameError("alignment (pose): no part found (no foreground against the background); is the "
                             "part in view and lit as in calibration?")
        if m.elongation < MIN_ELONGATION:
            raise FrameError(f"alignment (pose): the part is not elongated (length/width {m.elongation:.2f} < "
                             f"{MIN_ELONGATION:g}), so it has no axis to turn to; is the right part in view?")
        if m.length > LONGER * self.box[0]:  # its ends would be cut off, unseen
            raise FrameError(f"alignment (pose): the part is longer than any golden part (length {m.length:.0f} px "
                             f"against a {self.box[0]} px box); a wrong or longer part?")
        warp = pose_warp(m, self.box)
        if self.reference is None:
            return warp
        flipped = pose_warp(m, self.box, flip=True)
        c0 = correlation(warp_to_box(grey, warp, self.box, mask), self.reference)
        c1 = correlation(warp_to_box(grey, flipped, self.box, mask), self.reference)
        corr, warp = (c1, flipped) if c1 > c0 else (c0, warp)
        if corr < self.min_correlation:
            raise FrameError(f"alignment (pose): the part matches the golden reference poorly (correlation "
                             f"{corr:.2f} < {self.min_correlation:g}); is the right part in view? "
                             f"(preprocess.align.min_correlation)")
        return warp

    def warp_image(self, image: np.ndarray, warp: np.ndarray) -> np.ndarray:
        return warp_to_box(image, warp, self.box)
