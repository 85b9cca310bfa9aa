"""``preprocess.align.enabled: auto`` (the default): pose normalisation for parts that turn or move.

A part lying loose on a belt (a screw at any angle) gives golden frames that differ mostly by
pose; pose normalisation (``align.motion: pose``, inspector/pose.py) turns each frame's part to
one pose and cuts a box around it, after which the part reads like one in a fixture. Calibration
decides from the golden images alone, with the fixed-pose rule (calibration/methods/pose.py):

1. the frames as they come (features already extracted): twin ratio at or above the cut -> a
   fixed pose, nothing to normalise (the usual case; no extra work);
2. below the cut: the golden set is calibrated again with pose normalisation (a second export and
   feature extraction), and the twin ratio measured on its features;
3. kept if the golden parts now read as one pose; otherwise (or when the parts have no axis, are
   not found, ...) the frames as they come, their features reused.

calibrate() runs the steps; this module holds the signals and the record the bundle keeps.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from inspector.methods import global_context as gc

CUT = gc.AlignedConfig().auto_cut  # the fixed-pose rule's cut, as for the aligned map


class TurningPart(Exception):
    """Raised from the plain calibration's decide step: the golden parts turn or move."""

    def __init__(self, decision: gc.PoseDecision, golden):
        super().__init__(decision.reason)
        self.decision, self.golden = decision, golden  # the golden set as read, for the next try


class PoseNoBetter(Exception):
    """Raised from the pose-normalised calibration's decide step: the parts still do not read as one pose."""

    def __init__(self, decision: gc.PoseDecision):
        super().__init__(decision.reason)
        self.decision = decision


def with_align(settings, **align):
    """``settings`` with ``preprocess.align`` updated (enabled, motion)."""
    pre = settings.preprocess
    return settings.model_copy(update={"preprocess": pre.model_copy(
        update={"align": pre.align.model_copy(update=align)})})


def record(plain: Optional[gc.PoseDecision], posed: Optional[gc.PoseDecision], enabled: bool,
           reason: str) -> dict:
    """What the bundle's preprocess section keeps (inspector/manifest.py AlignAutoSection)."""
    return {"enabled": enabled, "twin_ratio": plain.twin_ratio if plain else None,
            "posed_twin_ratio": posed.twin_ratio if posed else None, "cut": CUT, "reason": reason}


def fixed(plain: gc.PoseDecision) -> dict:
    why = (f"off: the golden parts read as one pose (twin ratio {plain.twin_ratio} >= {CUT})"
           if plain.twin_ratio is not None else f"off: {plain.reason}")
    return record(plain, None, False, why)


def kept(plain: gc.PoseDecision, posed: gc.PoseDecision) -> dict:
    return record(plain, posed, True, f"on: the golden parts turn or move (twin ratio {plain.twin_ratio} < {CUT}) "
                                      f"and read as one pose once normalised ({posed.twin_ratio})")


def dropped(plain: gc.PoseDecision, why: str, posed: Optional[gc.PoseDecision] = None) -> dict:
    return record(plain, posed, False, f"off: the golden parts turn or move (twin ratio {plain.twin_ratio} < {CUT}), "
                                       f"but pose normalisation did not help: {why}")


def stamp(spec, rec: Optional[dict]):
    """The PreprocessSpec carrying the decision (the bundle's preprocess section)."""
    return spec if rec is None else dataclasses.replace(spec, align_auto=rec)
