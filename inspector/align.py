"""Optional alignment of each frame to the golden reference (``preprocess.align``).

Parts that shift or turn a little in the fixture look like defects to a patch model that learnt
them in one pose. With alignment on, calibration builds a reference view (the median of the
golden images after each is aligned to the most typical one) and stores it in the bundle; every frame, after
the ROI crop and resize, is registered to it with OpenCV's ECC (enhanced correlation coefficient,
on a half-size grey copy: about 1 ms at 256x256) and warped before the network sees it. The
anomaly map is warped back, so regions and heatmaps stay in the frame's own pixels.

A frame whose part cannot be registered (ECC does not converge, the correlation stays under
``min_correlation``, or the shift / rotation is beyond the limits) is an error verdict naming the
reason: a part that far out of place should not be judged as if it were in place.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from inspector.decode import FrameError

_MOTIONS = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE}
# ECC stops after this many iterations or when the warp changes by less than eps
_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 60, 1e-4)


@dataclass(frozen=True)
class AlignSpec:
    """Saved in the bundle's preprocess section; the daemon's config must agree with it."""

    motion: str = "euclidean"  # translation | euclidean (shift + rotation) | affine
    max_shift: float = 0.15  # largest shift accepted, as a share of the network input side
    max_rotation_deg: float = 15.0
    min_correlation: float = 0.6  # ECC correlation (-1..1) below which the part is not recognised

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Optional[dict]) -> Optional["AlignSpec"]:
        return None if not d else cls(str(d["motion"]), float(d["max_shift"]), float(d["max_rotation_deg"]),
                                      float(d["min_correlation"]))


def to_grey(image: np.ndarray) -> np.ndarray:
    """uint8 BGR or grey -> float32 grey in [0, 1]."""
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return grey.astype(np.float32) * (1.0 / 255.0)


class Aligner:
    """Registers network-size images to ``reference`` (float32 grey [H, W] in [0, 1])."""

    def __init__(self, reference: np.ndarray, spec: AlignSpec):
        if spec.motion not in _MOTIONS:  # pose: inspector/pose.py
            raise ValueError(f"align motion {spec.motion!r}; expected one of {sorted(_MOTIONS)}")
        self.spec = spec
        self.reference = np.ascontiguousarray(reference, dtype=np.float32)
        self._ref_small = cv2.pyrDown(self.reference)

    def estimate(self, grey: np.ndarray) -> np.ndarray:
        """float32 grey [H, W] -> warp [2, 3] with frame(warp @ [x, y, 1]) ~ reference(x, y).
        Raises FrameError when the part cannot be registered within the limits."""
        h, w = self.reference.shape
        if grey.shape != (h, w):
            raise FrameError(f"alignment: frame is {grey.shape[1]}x{grey.shape[0]} after resizing, the golden "
                             f"reference {w}x{h}; the bundle and the preprocessing disagree, recalibrate")
        warp = np.eye(2, 3, dtype=np.float32)
        small = cv2.pyrDown(grey)
        try:
            corr, warp = cv2.findTransformECC(self._ref_small, small, warp, _MOTIONS[self.spec.motion], _CRITERIA,
                                              None, 5)
        except cv2.error:
            raise FrameError("alignment: the part could not be registered to the golden reference (no "
                             "convergence); is the part in view and lit as in calibration?") from None
        warp[:, 2] *= 2.0  # the translation was found at half size (the 2x2 part is scale-free)
        if not (np.isfinite(warp).all() and math.isfinite(corr)) or corr < self.spec.min_correlation:
            raise FrameError(f"alignment: the frame matches the golden reference poorly (correlation {corr:.2f} < "
                             f"{self.spec.min_correlation:g}); is the right part in view? "
                             f"(preprocess.align.min_correlation)")
        # how far the image centre moved (the warp's own translation is about pixel (0, 0), where
        # a pure turn about the centre would count as a shift too)
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        moved = warp @ np.array([cx, cy, 1.0], np.float32)
        shift = float(math.hypot(moved[0] - cx, moved[1] - cy))
        limit = self.spec.max_shift * max(h, w)
        if shift > limit:
            raise FrameError(f"alignment: the part is {shift:.0f} px out of place at the network input (limit "
                             f"{limit:.0f} px); check the fixture, or recalibrate with a larger "
                             f"preprocess.align.max_shift")
        angle = float(math.degrees(math.atan2(warp[1, 0], warp[0, 0])))
        if abs(angle) > self.spec.max_rotation_deg:
            raise FrameError(f"alignment: the part is turned {angle:.1f} degrees (limit "
                             f"{self.spec.max_rotation_deg:g}); check the fixture, or recalibrate with a larger "
                             f"preprocess.align.max_rotation_deg")
        return warp

    @staticmethod
    def warp_image(image: np.ndarray, warp: np.ndarray) -> np.ndarray:
        """The frame resampled into the reference's pose (edges mirrored in where it moved)."""
        h, w = image.shape[:2]
        return cv2.warpAffine(image, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT_101)


def unalign_map(pixel_map: np.ndarray, warp: Sequence[float], size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """An anomaly map in the reference's pose -> the frame's own network-input pixels (zero where
    the frame shows what the reference does not). size: (w, h) of the frame's resized image when
    it differs from the map's (motion pose: the map is the canonical box, inspector/pose.py)."""
    m = np.asarray(warp, np.float32).reshape(2, 3)
    w, h = size if size is not None else pixel_map.shape[::-1]
    return cv2.warpAffine(pixel_map.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def unalign_to_frame(pixel_map: np.ndarray, tr) -> np.ndarray:
    """``unalign_map`` for a frame's RoiTransform ``tr`` (its resized size from its scales)."""
    return unalign_map(pixel_map, tr.align, (int(round(tr.roi_w * tr.scale_x)), int(round(tr.roi_h * tr.scale_y))))


def build_reference(greys: Sequence[np.ndarray], spec: AlignSpec) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Golden images (float32 grey, network size) -> (reference, [(index, reason) not registered]).

    The provisional reference is the golden image closest to the pixelwise median of all of them
    (a typical one, not an outlier or a blank frame that happens to come first); the median of all
    images registered to it is the final reference (sharper than any single image, free of one
    image's specks). Every image is then checked against the final reference, which is what the
    line will use. Raises FrameError when no image registers."""
    if not greys:
        raise FrameError("alignment: no golden images to build a reference from")
    stack = np.stack(greys)
    typical = int(np.argmin(np.abs(stack - np.median(stack, axis=0)).mean(axis=(1, 2))))
    first = Aligner(greys[typical], spec)
    aligned = []
    for g in greys:
        try:
            aligned.append(Aligner.warp_image(g, first.estimate(g)))
        except FrameError:
            pass
    if not aligned:
        raise FrameError("alignment: no golden image registers to the others; are they all the same part in "
                         "the same view? (or turn preprocess.align off)")
    reference = np.median(np.stack(aligned), axis=0).astype(np.float32)
    final = Aligner(reference, spec)
    failed = []
    for i, g in enumerate(greys):
        try:
            final.estimate(g)
        except FrameError as exc:
            failed.append((i, str(exc)))
    if len(failed) == len(greys):
        raise FrameError("alignment: no golden image registers to the golden reference; are they all the same "
                         "part in the same view? (or turn preprocess.align off)")
    return reference, failed
