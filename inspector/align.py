"""Optional alignment of each frame to the golden reference (``preprocess.align``).

Parts that shift or turn a little in the fixture look like defects to a patch model that learnt
them in one pose. With alignment on, calibration builds a reference view (the median of the
golden images after each is aligned to the first) and stores it in the bundle; every frame, after
the ROI crop and resize, is registered to it with OpenCV's ECC (enhanced correlation coefficient,
on a half-size grey copy, so it costs a few ms) and warped before the network sees it. The
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
        if spec.motion not in _MOTIONS:
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
        warp[:, 2] *= 2.0  # the translation was found at half size
        if not np.isfinite(warp).all() or corr < self.spec.min_correlation:
            raise FrameError(f"alignment: the frame matches the golden reference poorly (correlation {corr:.2f} < "
                             f"{self.spec.min_correlation:g}); is the right part in view? "
                             f"(preprocess.align.min_correlation)")
        shift = float(math.hypot(warp[0, 2], warp[1, 2]))
        limit = self.spec.max_shift * max(h, w)
        if shift > limit:
            raise FrameError(f"alignment: the part is {shift:.0f} px out of place at the network input (limit "
                             f"{limit:.0f} px); check the fixture or raise preprocess.align.max_shift")
        angle = float(math.degrees(math.atan2(warp[1, 0], warp[0, 0])))
        if abs(angle) > self.spec.max_rotation_deg:
            raise FrameError(f"alignment: the part is turned {angle:.1f} degrees (limit "
                             f"{self.spec.max_rotation_deg:g}); check the fixture or raise "
                             f"preprocess.align.max_rotation_deg")
        return warp

    @staticmethod
    def warp_image(image: np.ndarray, warp: np.ndarray) -> np.ndarray:
        """The frame resampled into the reference's pose (edges replicated where it moved in)."""
        h, w = image.shape[:2]
        return cv2.warpAffine(image, warp, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REFLECT_101)


def unalign_map(pixel_map: np.ndarray, warp: Sequence[float]) -> np.ndarray:
    """An anomaly map in the reference's pose -> the frame's own network-input pixels (zero where
    the frame shows what the reference does not)."""
    m = np.asarray(warp, np.float32).reshape(2, 3)
    h, w = pixel_map.shape
    return cv2.warpAffine(pixel_map.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def build_reference(greys: Sequence[np.ndarray], spec: AlignSpec) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Golden images (float32 grey, network size) -> (reference, [(index, reason) not registered]).

    The first image is the provisional reference; the median of all images aligned to it is the
    final one (sharper than any single image, and free of one image's specks)."""
    if not greys:
        raise ValueError("no golden images to build an alignment reference from")
    first = Aligner(greys[0], spec)
    aligned, failed = [], []
    for i, g in enumerate(greys):
        try:
            aligned.append(Aligner.warp_image(g, first.estimate(g)))
        except FrameError as exc:
            failed.append((i, str(exc)))
    reference = np.median(np.stack(aligned), axis=0).astype(np.float32)
    return reference, failed
