"""The golden reference view for ``preprocess.align``: built from the golden images at
calibration, stored in the bundle, and every frame is registered to it (inspector/align.py)."""
from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np

from calibration.augment import is_augmented, original_name
from calibration.golden import GoldenSet
from inspector.align import build_reference, to_grey
from inspector.decode import FrameError
from inspector.errors import InspectorError
from inspector.pose import MIN_ELONGATION, PoseAligner, measure
from inspector.preprocess import Preprocessor, PreprocessSpec
from inspector.tiling import TileGrid

log = logging.getLogger(__name__)

MAX_FAILED_SHARE = 0.2  # motion pose: golden images whose part is not found, above which calibration refuses


def golden_reference(golden: GoldenSet, spec: PreprocessSpec) -> tuple[GoldenSet, np.ndarray]:
    """(golden set without the images that cannot be registered, reference float32 grey [H, W]).

    Golden images that do not register to the others are listed in ``skipped`` with the reason,
    like unreadable files: a golden part out of place would teach the model a wrong pose."""
    if spec.align.motion == "pose":
        raise ValueError("motion pose: golden_pose builds its reference")
    plain = Preprocessor(dataclasses.replace(spec, align=None))  # the same work size, not aligned
    greys = [to_grey(plain.crop_resize(im)[0]) for im in golden.images]
    try:
        reference, failed = build_reference(greys, spec.align)
    except FrameError as exc:
        raise InspectorError(f"golden images: {exc}") from None
    return _drop(golden, failed), reference


def _drop(golden: GoldenSet, failed: list[tuple[int, str]]) -> GoldenSet:
    """The golden set without the failed images, listed in ``skipped`` with the reason."""
    if not failed:
        return golden
    # an original that does not register goes with its augmented copies (same pose, same part)
    bad_originals = {original_name(golden.names[i]) for i, _ in failed}
    bad = {i for i, n in enumerate(golden.names) if original_name(n) in bad_originals}
    skipped = list(golden.skipped) + [(golden.names[i], f"{golden.names[i]}: {reason}") for i, reason in failed
                                      if not is_augmented(golden.names[i])]
    for i, reason in failed:
        log.warning("golden image %s left out (with its augmented copies): %s", golden.names[i], reason)
    kept = GoldenSet([n for i, n in enumerate(golden.names) if i not in bad],
                     [im for i, im in enumerate(golden.images) if i not in bad], skipped, golden.sha256)
    return kept


def _round8(x: float) -> int:
    return int(math.ceil(x / 8.0)) * 8


def golden_pose(golden: GoldenSet, spec: PreprocessSpec, tile: tuple[int, int]) -> tuple[GoldenSet, np.ndarray,
                                                                                           PreprocessSpec]:
    """``preprocess.align.motion: pose`` (inspector/pose.py): (golden set without the images whose
    part is not found or does not match, the reference view at the part's box, the spec with the
    box as the work size and the geometry's work size as the canvas the box is cut from).

    The box holds the longest golden part (4 px to spare: a box one tile long is one network
    input) and the widest with a quarter more (its ends' angle is the least certain). The reference
    is built twice: the canonical golden images with the wider end left, their median; then each
    settled against that median (which end is which), the median again. More than
    ``MAX_FAILED_SHARE`` of the golden images without a part found: refused."""
    canvas = spec.work_size
    plain = Preprocessor(dataclasses.replace(spec, align=None, canvas=None))
    greys = [to_grey(plain.crop_resize(im)[0]) for im in golden.images]
    measures = [measure(g) for g in greys]
    found = [m for m in measures if m is not None]
    if len(found) < max(3, len(greys) // 2):
        raise InspectorError(f"golden images: preprocess.align motion pose found a part in only {len(found)} of "
                             f"{len(greys)}; is the part darker or brighter than the background?")
    elong = float(np.median([m.elongation for m in found]))
    if elong < MIN_ELONGATION:
        raise InspectorError(f"golden images: preprocess.align motion pose needs an elongated part (the golden parts' "
                             f"length/width is {elong:.2f}, under {MIN_ELONGATION:g}): a round or square part has no "
                             f"axis to turn to; use motion euclidean for a part in a fixture")
    diagonal = math.hypot(*canvas)
    box = (min(_round8(max(m.length for m in found) + 4), _round8(diagonal)),
           min(_round8(1.25 * max(m.width for m in found) + 8), _round8(diagonal)))
    first = PoseAligner(None, spec.align.min_correlation, box)
    canon = []
    for g in greys:
        try:
            canon.append(first.warp_image(g, first.estimate(g)))
        except FrameError:
            pass
    reference = np.median(np.stack(canon), axis=0).astype(np.float32)
    for settle in range(3):  # settle each part's ends against the median, then the median of those; the
        # last pass only checks the golden images against the reference the line will use
        aligner = PoseAligner(reference, spec.align.min_correlation)
        canon, failed = [], []
        for i, g in enumerate(greys):
            try:
                canon.append(aligner.warp_image(g, aligner.estimate(g)))
            except FrameError as exc:
                failed.append((i, str(exc)))
        if not canon:
            raise InspectorError("golden images: no part matches the others after pose normalisation; are they "
                                 "all the same part? (or turn preprocess.align off)")
        if settle < 2:
            reference = np.median(np.stack(canon), axis=0).astype(np.float32)
    if len(failed) > MAX_FAILED_SHARE * len(greys):  # not found reliably: the line's frames would error as often
        raise InspectorError(f"golden images: preprocess.align motion pose failed on {len(failed)} of {len(greys)} "
                             f"(more than {MAX_FAILED_SHARE:.0%}; the first: {failed[0][1]}); it needs one "
                             f"elongated part that stands out from a plain background (or turn preprocess.align off)")
    grid = TileGrid.plan(*box, *tile, spec.tile_overlap)
    posed = dataclasses.replace(spec, width=grid.tile_w, height=grid.tile_h, work=box, canvas=canvas)
    log.info("pose normalisation: the part's box %dx%d cut from %dx%d (golden length/width %.1f)", *box, *canvas,
             elong)
    return _drop(golden, failed), reference, posed
