"""The golden reference view for ``preprocess.align``: built from the golden images at
calibration, stored in the bundle, and every frame is registered to it (inspector/align.py)."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from calibration.augment import is_augmented, original_name
from calibration.golden import GoldenSet
from inspector.align import build_reference, to_grey
from inspector.decode import FrameError
from inspector.errors import InspectorError
from inspector.preprocess import Preprocessor, PreprocessSpec

log = logging.getLogger(__name__)


def golden_reference(golden: GoldenSet, spec: PreprocessSpec) -> tuple[GoldenSet, np.ndarray]:
    """(golden set without the images that cannot be registered, reference float32 grey [H, W]).

    Golden images that do not register to the others are listed in ``skipped`` with the reason,
    like unreadable files: a golden part out of place would teach the model a wrong pose."""
    plain = Preprocessor(dataclasses.replace(spec, align=None))  # the same work size, not aligned
    greys = [to_grey(plain.crop_resize(im)[0]) for im in golden.images]
    try:
        reference, failed = build_reference(greys, spec.align)
    except FrameError as exc:
        raise InspectorError(f"golden images: {exc}") from None
    if not failed:
        return golden, reference
    # an original that does not register goes with its augmented copies (same pose, same part)
    bad_originals = {original_name(golden.names[i]) for i, _ in failed}
    bad = {i for i, n in enumerate(golden.names) if original_name(n) in bad_originals}
    skipped = list(golden.skipped) + [(golden.names[i], f"{golden.names[i]}: {reason}") for i, reason in failed
                                      if not is_augmented(golden.names[i])]
    for i, reason in failed:
        log.warning("golden image %s left out (with its augmented copies): %s", golden.names[i], reason)
    kept = GoldenSet([n for i, n in enumerate(golden.names) if i not in bad],
                     [im for i, im in enumerate(golden.images) if i not in bad], skipped, golden.sha256)
    return kept, reference
