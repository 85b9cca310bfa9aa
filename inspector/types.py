"""Stage contracts: small frozen dataclasses holding numpy arrays (no torch here).

Data flows one way: Source -Frame-> Preprocessor -tensor-> Engine -Features-> Scorer
-ScoreMap (inspector/methods/base.py)-> Judge -Verdict-> Writer.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

import numpy as np


class VerdictKind(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


@dataclass(frozen=True)
class Frame:
    """One picture of one part.

    image: BGR uint8 HxWx3 or grey uint8 HxW; None when the frame could not be decoded
    (then ``error`` says why and the frame goes straight to the writer as an error row).
    key: a stable identity for exactly-once bookkeeping (folder sources: name+size+mtime).
    """

    id: str
    source: str
    captured_at: datetime  # UTC, timezone-aware
    image: Optional[np.ndarray]
    origin_path: Optional[str] = None
    key: Optional[str] = None
    error: Optional[str] = None
    decode_ms: float = 0.0  # time the source spent reading + decoding this frame
    # True for files already in the inbox when the source started: only those can have a row
    # committed by an earlier run (a crash between commit and file move)
    from_backlog: bool = False

    @property
    def size(self) -> Optional[tuple[int, int]]:
        """(width, height) of the original image, or None for an undecodable frame."""
        return None if self.image is None else (int(self.image.shape[1]), int(self.image.shape[0]))


@dataclass(frozen=True)
class RoiTransform:
    """How a work-image pixel (the ROI crop resized to the bundle's work size, before tiling)
    maps back to the original image.

    original = (work_xy / scale) + (roi_x, roi_y), with independent x/y scales. With alignment
    on, ``align`` is the 2x3 warp (row-major) from the reference's pose to the frame's work-image
    pixels; maps are warped back with it before they reach these coordinates.
    """

    roi_x: int
    roi_y: int
    roi_w: int
    roi_h: int
    scale_x: float
    scale_y: float
    original_w: int
    original_h: int
    align: Optional[tuple[float, ...]] = None


@dataclass(frozen=True)
class Region:
    """A connected defect region in ORIGINAL image pixel coordinates."""

    x: int
    y: int
    w: int
    h: int
    area: int
    peak_score: float


@dataclass(frozen=True)
class Verdict:
    frame: Frame
    kind: VerdictKind
    score: Optional[float]
    threshold: Optional[float]
    regions: tuple[Region, ...] = ()
    bundle_id: Optional[str] = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: Optional[str] = None
    # pixel map in work-image coordinates (the ROI crop at the bundle's work size), kept for
    # heatmap rendering; not stored in the DB
    pixel_map: Optional[np.ndarray] = None
    transform: Optional[RoiTransform] = None
    # True when this frame's row was already committed before (a restart after a crash between
    # commit and file move): the writer only finishes the move, it records nothing new.
    already_recorded: bool = False
