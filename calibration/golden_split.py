"""Which golden images calibration fits on and which it holds out to set thresholds."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from calibration.augment import augment_golden, is_augmented, original_name
from calibration.golden import GoldenSet, list_images, read_golden
from calibration.methods.split import split_rows
from calibration.progress import Bar
from inspector.errors import InspectorError

log = logging.getLogger(__name__)


def enough_originals(golden: GoldenSet, minimum: int, message: str) -> int:
    """How many golden images are originals (not augmented copies); InspectorError(message with
    {n} filled in) when fewer than ``minimum``."""
    n = sum(not is_augmented(name) for name in golden.names)
    if n < minimum:
        raise InspectorError(message.format(n=n))
    return n


def load_golden(settings, golden_dir: Path, golden: Optional[GoldenSet], augment: Optional[int],
                bar: Bar) -> tuple[GoldenSet, int]:
    """(the golden set, read from ``golden_dir`` unless given, with its augmented copies; how many
    are originals). InspectorError when fewer than calibration.min_images are readable."""
    if golden is None:
        with bar(len(list_images(golden_dir)), "reading golden images") as pb:
            golden = read_golden(golden_dir, max_pixels=settings.preprocess.max_pixels, progress=pb.update)
    for name, reason in golden.skipped:
        log.warning("skipped %s", reason)
    cal = settings.calibration
    originals = enough_originals(golden, cal.min_images, f"golden folder {golden_dir}: {{n}} readable images "
                                 f"({len(golden.skipped)} skipped), need at least {cal.min_images} "
                                 f"(calibration.min_images)")
    copies = cal.augment.copies if augment is None else augment
    if copies and not any(is_augmented(n) for n in golden.names):
        golden = augment_golden(golden, copies, cal.seed, cal.augment)
        log.info("augmented: %d golden images -> %d", originals, len(golden.images))
    return golden, originals


def split_originals(names: list[str], share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit indices, held-out indices) over a golden set that may hold augmented copies: the
    split is drawn over the original images; held out are originals only, and the copies of a
    held-out image are in neither set. Without copies this is exactly ``split_rows``."""
    origins = [original_name(n) for n in names]
    unique = list(dict.fromkeys(origins))
    _, hold = split_rows(len(unique), share, seed)
    held = {unique[i] for i in hold}
    fit_idx = [i for i, o in enumerate(origins) if o not in held]
    hold_idx = [i for i, n in enumerate(names) if origins[i] in held and not is_augmented(n)]
    return np.array(fit_idx, np.int64), np.array(hold_idx, np.int64)
