"""Synthetic defects pasted into golden images, to measure what a calibrated model would miss
without a single real defect image (calibration/detectability.py uses them).

Kinds (``KINDS``), each sized by ``size``, a side in frame pixels (the mask's area is about size²):

- ``scratch``: a thin, slightly curved line, 3..6 × size long, 1..size/6 px wide, darker or brighter;
- ``spot``: a filled ellipse about ``size`` across, its grey levels shifted up or down;
- ``missing``: a patch replaced by a flat fill: the background's colour (material missing, the
  belt shows through) or the patch's own blurred mean (a feature worn away);
- ``foreign``: a patch of the same or another golden image, from elsewhere, turned, pasted here
  (cut-paste);
- ``texture``: a Perlin-noise-shaped blob filled, partly transparent, with a texture from another
  place or another golden image (as DRAEM makes its anomalies).

Every defect is checked to be visible: the mean absolute grey-level change inside its mask (the
largest over the colour channels) is at least ``min_contrast``, else it is redrawn elsewhere; the
last resort shifts the patch's grey levels, so a defect always comes back. Pixels outside the mask
are never changed.

Where defects go: on the part, not on the belt. For a part photographed on a uniform background
the background is the colour along the image border; the part is what differs from it by more
than noise (``foreground_mask``), holes in it included. Where nothing stands out from the border
(a texture, a part filling the frame) the whole image is the part. Defect centres are drawn on the
part, as far inside it as the defect's size asks where there is room.

Deterministic: ``DefectSynthesizer(images, seed).make(i, kind, size)`` is the same defect every time.
numpy + OpenCV only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

KINDS = ("scratch", "spot", "missing", "foreign", "texture")
ATTEMPTS = 12  # redraws (other place, other parameters) before the last resort


@dataclass(frozen=True)
class SyntheticDefect:
    image: np.ndarray  # the golden image with the defect, same shape and dtype (uint8)
    mask: np.ndarray  # bool [H, W]: where the image was changed
    kind: str
    size: int
    contrast: float  # mean over the mask of the largest per-channel absolute change


def perlin_noise(shape: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise, float32 [h, w], roughly in [-1, 1]: ``cells`` lattice cells
    along each side, a random unit gradient at every lattice point, quintic fade between them."""
    h, w = shape
    angles = rng.uniform(0.0, 2.0 * math.pi, (cells + 1, cells + 1))
    gx, gy = np.cos(angles), np.sin(angles)
    y = (np.arange(h) + 0.5) * cells / h
    x = (np.arange(w) + 0.5) * cells / w
    yi = np.minimum(y.astype(np.int64), cells - 1)
    xi = np.minimum(x.astype(np.int64), cells - 1)
    fy = (y - yi)[:, None]
    fx = (x - xi)[None, :]

    def corner(oy: int, ox: int) -> np.ndarray:
        g_x = gx[np.ix_(yi + oy, xi + ox)]
        g_y = gy[np.ix_(yi + oy, xi + ox)]
        return g_x * (fx - ox) + g_y * (fy - oy)

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(fx), fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return ((top * (1 - v) + bottom * v) * math.sqrt(2.0)).astype(np.float32)


def _grey(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def _like(donor: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``donor`` with ``target``'s number of channels."""
    if donor.ndim == target.ndim:
        return donor
    return cv2.cvtColor(donor, cv2.COLOR_GRAY2BGR) if target.ndim == 3 else cv2.cvtColor(donor, cv2.COLOR_BGR2GRAY)


def _border(grey: np.ndarray) -> np.ndarray:
    b = max(2, min(grey.shape) // 16)
    return np.concatenate([grey[:b].ravel(), grey[-b:].ravel(), grey[:, :b].ravel(), grey[:, -b:].ravel()])


def background_level(image: np.ndarray) -> np.ndarray:
    """The median colour along the image border (per channel): the belt a part lies on."""
    b = max(2, min(image.shape[:2]) // 16)
    flat = image.reshape(image.shape[0], image.shape[1], -1).astype(np.float32)
    border = np.concatenate([flat[:b].reshape(-1, flat.shape[2]), flat[-b:].reshape(-1, flat.shape[2]),
                             flat[:, :b].reshape(-1, flat.shape[2]), flat[:, -b:].reshape(-1, flat.shape[2])])
    return np.median(border, axis=0)


def foreground_mask(image: np.ndarray, *, min_step: float = 25.0) -> np.ndarray:
    """bool [H, W]: the part. Pixels whose (lightly smoothed) grey level differs from the border's
    median by more than max(min_step, 4 robust sigmas of the border), with the holes that do not
    reach the border filled in. All True when that is under 2% of the image (no uniform background)."""
    grey = _grey(image).astype(np.float32)
    border = _border(grey)
    level = float(np.median(border))
    spread = 1.4826 * float(np.median(np.abs(border - level)))
    sigma = max(1.0, min(grey.shape) / 128.0)
    smooth = cv2.GaussianBlur(grey, (0, 0), sigma)
    fg = (np.abs(smooth - level) > max(min_step, 4.0 * spread)).astype(np.uint8)
    # background components that do not touch the border are holes in the part: part of it
    n, labels = cv2.connectedComponents(1 - fg, connectivity=4)
    outside = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    part = ~np.isin(labels, outside[outside > 0]) if n > 1 else fg.astype(bool)
    if part.mean() < 0.02:
        return np.ones(grey.shape, bool)
    return part


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    """The mask's bounding box (frames can be large; defects are small)."""
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return slice(y, y + h), slice(x, x + w)


def _contrast(before: np.ndarray, after: np.ndarray, m: np.ndarray) -> float:
    """Mean over ``m`` of the largest per-channel absolute change (regions of the same shape)."""
    if not m.any():
        return 0.0
    d = np.abs(after[m].astype(np.int16) - before[m].astype(np.int16))
    if d.ndim == 2:
        d = d.max(axis=1)
    return float(d.mean())


def _shifted(region: np.ndarray, m: np.ndarray, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """``region`` with its grey levels inside ``m`` moved up or down by low..high, towards
    whichever side has room. An empty ``m`` (a scratch drawn off the image) changes nothing: the
    caller draws again."""
    if not m.any():
        return region.copy()
    inside = region[m].astype(np.int16)
    mean = float(inside.mean())
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if (sign > 0 and 255 - mean < low) or (sign < 0 and mean < low):
        sign = -sign
    out = region.copy()
    out[m] = np.clip(inside + int(round(sign * rng.uniform(low, high))), 0, 255).astype(np.uint8)
    return out


class DefectSynthesizer:
    """Synthetic defects in golden images. images: the golden images (uint8 BGR or grey, any
    sizes) that defects are pasted into and that patches and textures are taken from.
    roi: (x, y, w, h) the inspected part of every frame (preprocess.roi); defects go inside it."""

    def __init__(self, images: Sequence[np.ndarray], *, seed: int = 0, min_contrast: float = 15.0,
                 roi: Optional[Sequence[int]] = None):
        if not len(images):
            raise ValueError("no golden images to paste synthetic defects into")
        self.images = list(images)
        self.seed = int(seed)
        self.min_contrast = float(min_contrast)
        self.roi = tuple(int(v) for v in roi) if roi is not None else None
        self._fg: dict[int, np.ndarray] = {}  # per image: part mask (inside the ROI)
        self._dist: dict[int, np.ndarray] = {}  # per image: distance to the part's edge
        self._background: dict[int, np.ndarray] = {}  # per image: the border's colour
        self._candidates: dict[tuple[int, int], np.ndarray] = {}  # (image, reach): possible centres

    # ---------------------------------------------------------------- where
    def region(self, i: int) -> tuple[int, int, int, int]:
        """(x, y, w, h): the part of image ``i`` defects may go in (the ROI, clipped to the image)."""
        h, w = self.images[i].shape[:2]
        if self.roi is None:
            return 0, 0, w, h
        x, y, rw, rh = self.roi
        x0, y0 = max(0, x), max(0, y)
        return x0, y0, max(1, min(w, x + rw) - x0), max(1, min(h, y + rh) - y0)

    def part_mask(self, i: int) -> np.ndarray:
        """bool [H, W]: where defects may go in image ``i`` (the part, inside the ROI)."""
        if i not in self._fg:
            img = self.images[i]
            x, y, w, h = self.region(i)
            fg = np.zeros(img.shape[:2], bool)
            fg[y:y + h, x:x + w] = foreground_mask(img[y:y + h, x:x + w])
            self._fg[i] = fg
            self._dist[i] = cv2.distanceTransform(fg.astype(np.uint8), cv2.DIST_L2, 3)
        return self._fg[i]

    def _centre(self, i: int, reach: float, rng: np.random.Generator) -> tuple[float, float]:
        """A random point on the part at least ``reach`` from its edge (the deepest points when
        the part is thinner than that)."""
        self.part_mask(i)
        dist = self._dist[i]
        key = (i, min(int(reach), int(dist.max())))
        if key not in self._candidates:
            self._candidates[key] = np.flatnonzero(dist.ravel() >= key[1])
        ok = self._candidates[key]
        k = int(ok[rng.integers(0, len(ok))])
        return float(k % dist.shape[1]), float(k // dist.shape[1])

    # ---------------------------------------------------------------- what
    def make(self, i: int, kind: str, size: int, variant: int = 0) -> SyntheticDefect:
        """A ``kind`` defect of side ``size`` (frame pixels) in golden image ``i``; another
        ``variant`` gives another defect of the same kind and size there."""
        if kind not in KINDS:
            raise ValueError(f"synthetic defect kind {kind!r}: expected one of {', '.join(KINDS)}")
        img = self.images[i]
        _, _, w, h = self.region(i)
        size = int(size)
        if size < 1 or size > min(h, w) / 2:
            raise ValueError(f"synthetic defect size {size} px does not fit a {w}x{h} image or ROI "
                             f"(at most half its side)")
        rng = np.random.default_rng([self.seed, i, KINDS.index(kind), size, variant])
        draw = getattr(self, "_" + kind)  # -> (mask, its bounding box, the new pixels in that box)
        best = None
        for _ in range(ATTEMPTS):
            mask, box, patch = draw(i, size, rng)
            c = _contrast(img[box], patch, mask[box])
            if c >= self.min_contrast:
                break
            if mask.any() and (best is None or c > best[3]):
                best = (mask, box, patch, c)
        else:  # last resort (flat or featureless images): the best shape, its grey levels shifted
            if best is None:
                mask = self._patch_mask(i, size, rng)
                best = (mask, _box(mask), img[_box(mask)], 0.0)
            mask, box, patch, _ = best
            patch = _shifted(patch, mask[box], rng, max(self.min_contrast * 2, 40.0), max(self.min_contrast * 3, 80.0))
            c = _contrast(img[box], patch, mask[box])
        out = img.copy()
        out[box] = np.where(mask[box] if img.ndim == 2 else mask[box][..., None], patch, img[box])
        return SyntheticDefect(out, mask, kind, size, c)

    def _blank(self, i: int) -> np.ndarray:
        return np.zeros(self.images[i].shape[:2], np.uint8)

    def _patch_mask(self, i: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """An ellipse or a turned rectangle of about size × size on the part."""
        cx, cy = self._centre(i, size / 2, rng)
        a, b = size * rng.uniform(0.8, 1.2), size * rng.uniform(0.8, 1.2)
        angle = rng.uniform(0, 180)
        m = self._blank(i)
        if rng.random() < 0.5:
            cv2.ellipse(m, (int(round(cx)), int(round(cy))), (max(1, int(round(a / 2 * 1.13))),
                        max(1, int(round(b / 2 * 1.13)))), angle, 0, 360, 1, -1)  # 1.13: area ab, like the box
        else:
            box = cv2.boxPoints(((cx, cy), (a, b), angle)).round().astype(np.int32)
            cv2.fillConvexPoly(m, box, 1)
        return m.astype(bool)

    def _scratch(self, i, size, rng):
        length = size * rng.uniform(3, 6)
        width = int(rng.integers(max(1, size // 12), max(1, size // 6) + 1))
        cx, cy = self._centre(i, length / 2, rng)
        t = rng.uniform(0, math.pi)
        d = np.array([math.cos(t), math.sin(t)])
        normal = np.array([-d[1], d[0]])
        p0 = np.array([cx, cy]) - d * length / 2
        p2 = np.array([cx, cy]) + d * length / 2
        p1 = np.array([cx, cy]) + normal * length * rng.uniform(-0.3, 0.3)  # bend
        s = np.linspace(0, 1, 24)[:, None]
        curve = (1 - s) ** 2 * p0 + 2 * (1 - s) * s * p1 + s ** 2 * p2  # quadratic Bezier
        m = self._blank(i)
        cv2.polylines(m, [curve.round().astype(np.int32)], False, 1, thickness=width, lineType=cv2.LINE_8)
        mask = m.astype(bool)
        box = _box(mask)
        return mask, box, _shifted(self.images[i][box], mask[box], rng, 50, 110)

    def _spot(self, i, size, rng):
        cx, cy = self._centre(i, size / 2, rng)
        m = self._blank(i)
        axes = tuple(max(1, int(round(size / 2 * rng.uniform(0.85, 1.15)))) for _ in range(2))
        cv2.ellipse(m, (int(round(cx)), int(round(cy))), axes, rng.uniform(0, 180), 0, 360, 1, -1)
        mask = m.astype(bool)
        box = _box(mask)
        return mask, box, _shifted(self.images[i][box], mask[box], rng, 40, 100)

    def _missing(self, i, size, rng):
        img = self.images[i]
        mask = self._patch_mask(i, size, rng)
        if rng.random() < 0.5:  # material missing: the background shows through
            if i not in self._background:
                self._background[i] = background_level(img)
            fill = self._background[i]
        else:  # a feature worn away: the patch's own mean
            fill = img[_box(mask)][mask[_box(mask)]].reshape(-1, 1 if img.ndim == 2 else img.shape[2]).mean(axis=0)
        fill = np.clip(np.round(fill), 0, 255).astype(np.uint8)
        box = _box(mask)
        patch = img[box].copy()
        patch[mask[box]] = fill[0] if img.ndim == 2 else fill
        return mask, box, patch

    def _from_elsewhere(self, i: int, size: int, rng: np.random.Generator, centre: tuple[float, float],
                        box: tuple[slice, slice]) -> np.ndarray:
        """What lies in ``box`` of image ``i`` when a donor (this or another golden image) is moved
        so that a random place of its part lands on ``centre``, turned by a random angle."""
        img = self.images[i]
        j = int(rng.integers(0, len(self.images)))
        donor = _like(self.images[j], img)
        sx, sy = self._centre(j, size / 2, rng)
        m = cv2.getRotationMatrix2D((sx, sy), float(rng.choice([0, 90, 180, 270]) + rng.uniform(-30, 30)), 1.0)
        m[:, 2] += (centre[0] - sx - box[1].start, centre[1] - sy - box[0].start)  # into the box's frame
        return cv2.warpAffine(donor, m, (box[1].stop - box[1].start, box[0].stop - box[0].start),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def _foreign(self, i, size, rng):
        img = self.images[i]
        mask = self._patch_mask(i, size, rng)
        box = _box(mask)
        ys, xs = np.nonzero(mask[box])
        centre = (box[1].start + float(xs.mean()), box[0].start + float(ys.mean()))
        moved = self._from_elsewhere(i, size, rng, centre, box)
        patch = img[box].copy()
        patch[mask[box]] = moved[mask[box]]
        return mask, box, patch

    def _texture(self, i, size, rng):
        img = self.images[i]
        h, w = img.shape[:2]
        side = int(min(2 * size, h, w))
        noise = perlin_noise((side, side), int(rng.integers(2, 5)), rng)
        yy, xx = np.mgrid[0:side, 0:side]
        r2 = ((yy - side / 2 + 0.5) ** 2 + (xx - side / 2 + 0.5) ** 2) / (side / 2) ** 2
        field = noise + 2.0 * (1.0 - r2)  # noise-shaped, held near the centre
        field[r2 > 1] = -np.inf
        k = min(size * size, int((r2 <= 1).sum()))
        cut = np.partition(field.ravel(), field.size - k)[field.size - k]
        blob = field >= cut
        cx, cy = self._centre(i, side / 2, rng)
        x0 = int(np.clip(round(cx - side / 2), 0, w - side))
        y0 = int(np.clip(round(cy - side / 2), 0, h - side))
        mask = np.zeros((h, w), bool)
        mask[y0:y0 + side, x0:x0 + side] = blob
        box = (slice(y0, y0 + side), slice(x0, x0 + side))
        moved = self._from_elsewhere(i, size, rng, (x0 + side / 2, y0 + side / 2), box)
        beta = rng.uniform(0.5, 1.0)  # opacity, as in DRAEM
        patch = img[box].copy()
        mixed = (1 - beta) * patch[blob].astype(np.float32) + beta * moved[blob].astype(np.float32)
        patch[blob] = np.clip(np.round(mixed), 0, 255).astype(np.uint8)
        return mask, box, patch
