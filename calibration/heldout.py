"""What calibration measures on the held-out golden images: their scores through the engine the
line will run, the thresholds set from them, and the escape rates of defects at that threshold."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from calibration.detectability import Detectability, defect_sizes, estimate_detectability
from calibration.features import extract_features, run_images
from calibration.golden import read_golden
from calibration.progress import Bar
from calibration.thresholds import Threshold, budget_threshold, quantile_margin_threshold
from inspector.decode import FrameError
from inspector.errors import InspectorError
from inspector.preprocess import Preprocessor

log = logging.getLogger(__name__)


TRAINED_ON_DEFECTS = ("the --defects images trained this scorer: their escape rate is measured on its training "
                      "data (optimistic); judge it on defect images it has not seen")


def read_defects(defects_dir: str | Path, settings) -> list:
    """The --defects images (unreadable ones logged and skipped)."""
    found = read_golden(defects_dir, max_pixels=settings.preprocess.max_pixels)
    for _, reason in found.skipped:
        log.warning("defect image skipped: %s", reason)
    return found.images


def defect_features(engine, pre: Preprocessor, images: list, defects_dir: str | Path, bar: Bar) -> np.ndarray:
    """The --defects images' patch features float32 [M, D, h, w], as the golden ones were made,
    for a method that trains on them."""
    if not images:
        raise InspectorError(f"defects folder {defects_dir}: no readable images; the scorer trains on them")
    with bar(len(images), "extracting defect features") as pb:
        return extract_features(engine, pre, images, batch=engine.spec.max_batch, progress=pb.update)


def threshold(scores: np.ndarray, cal) -> Threshold:
    """calibration.threshold.rule applied to held-out scores (calibration/thresholds.py)."""
    if cal.threshold.rule == "budget":
        return budget_threshold(scores, cal.false_reject_budget)
    return quantile_margin_threshold(scores, cal.threshold.quantile, cal.threshold.margin)


def image_scorer(engine, pre: Preprocessor, scorer, input_hw: tuple[int, int]) -> Callable[[list], np.ndarray]:
    """images -> image scores along the held-out images' path (this engine, preprocessing and
    scorer). A frame the preprocessor refuses (it does not register to the golden reference)
    scores +inf: the daemon records an error for it, never a pass."""
    def score(images: list) -> np.ndarray:
        scores = np.full(len(images), np.inf)
        usable = list(range(len(images)))
        if pre.spec.align is not None:  # only registration refuses a frame of the golden images' size
            usable = []
            for k, image in enumerate(images):
                try:
                    pre.prepare(image)
                except FrameError:
                    continue
                usable.append(k)
        if usable:
            outputs = run_images(engine, pre, [images[k] for k in usable], batch=engine.spec.max_batch)
            scores[usable] = scorer.score(outputs, input_hw).image_scores
        return scores

    return score


def detectability(score_images, held_images: list, threshold_value: float, settings,
                  real: Optional[list], bar: Bar) -> Optional[Detectability]:
    """Escape rates by defect size (calibration/detectability.py) and on ``real`` (the --defects
    images, read_defects); None when calibration.synthetic_defects is 0 and there are none."""
    cal = settings.calibration
    if not cal.synthetic_defects and real is None:
        return None
    sizes = defect_sizes(cal.min_defect_px) if cal.synthetic_defects else []
    with bar(None, "escape rates on synthetic defects") as pb:
        result = estimate_detectability(score_images, held_images, threshold_value, sizes,
                                        max_images=cal.synthetic_defects, seed=cal.seed, roi=settings.preprocess.roi,
                                        real_defects=real)
        pb.update(sum(r.n for r in result.by_size.values()) + (result.real.n if result.real else 0))
    for size in result.sizes_left_out:
        log.warning("synthetic defects of %d px do not fit the %s: no escape rate for that size "
                    "(lower calibration.min_defect_px)", size, "ROI" if settings.preprocess.roi else "images")
    return result
