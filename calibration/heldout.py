"""What calibration measures on the held-out golden images: their scores through the engine the
line will run, the thresholds set from them, and the escape rates of defects at that threshold."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from calibration.detectability import Detectability, defect_sizes, estimate_detectability
from calibration.features import extract_features, run_images
from calibration.golden import read_golden
from calibration.progress import Bar
from calibration.thresholds import Threshold, budget_threshold, few_heldout_warning, quantile_margin_threshold
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


@dataclass
class HeldOut:
    """The held-out golden images' scores and the thresholds set from them."""

    scores: np.ndarray  # float64 [n] image scores
    maps: Optional[np.ndarray]  # float32 [n, H, W] smoothed maps without padding, or None
    map_maxima: np.ndarray  # float64 [n] (empty for an image-level method)
    image_threshold: Threshold
    pixel_threshold: Optional[Threshold]
    warnings: list[str]

    @classmethod
    def measure(cls, scorer, outputs: dict, pre: Preprocessor, cal, between=None,
                images_at_once: int = 8, images: Optional[list] = None) -> "HeldOut":
        """``between()`` is called between batches of ``images_at_once`` images: calibrate lifts
        its one-BLAS-thread hold there once the refit has ended. An image's score does not depend
        on the others in its batch (up to float rounding in the last digits). ``images``: the
        held-out originals, for a method whose maps are refined by the frame (the pixel
        threshold is set on the maps the line will see)."""
        n = len(next(iter(outputs.values())))
        parts = []
        for s in range(0, n, images_at_once):
            parts.append(scorer.score({k: v[s:s + images_at_once] for k, v in outputs.items()}, pre.grid.work_hw))
            parts[-1].patch_maps  # a deferred map made now: its batch's arrays go before the next batch's
            if between is not None:
                between()
        held = parts[0] if len(parts) == 1 else dataclasses.replace(
            parts[0], image_scores=np.concatenate([p.image_scores for p in parts]),
            patch_maps=None if parts[0].patch_maps is None else np.concatenate([p.patch_maps for p in parts]))
        scores = held.image_scores.astype(np.float64)
        whole = held.pixel_maps
        if whole is not None and held.guide_radius > 0 and images is not None:
            whole = held.guided_pixel_maps([pre.prepare(im)[0] for im in images])
        maps = None if whole is None else pre.grid.content(whole)  # padding off
        maxima = maps.reshape(len(scores), -1).max(1) if maps is not None else np.array([], np.float64)
        image = threshold(scores, cal)
        warnings = [w for w in (few_heldout_warning(image, cal.holdout),) if w]
        for w in warnings:
            log.warning("%s", w)
        return cls(scores, maps, maxima, image, threshold(maxima, cal) if maxima.size else None, warnings)

    def manifest_sections(self) -> dict:
        """thresholds, metrics (without seconds) and warnings, as the manifest holds them."""
        image, pixel = self.image_threshold, self.pixel_threshold
        return {"thresholds": {"image": image.value, "pixel": pixel.value if pixel else None,
                               "image_rule": image.to_json(), "pixel_rule": pixel.to_json() if pixel else None},
                "metrics": {"heldout_scores": [round(float(s), 6) for s in self.scores],
                            "heldout_map_maxima": [round(float(s), 6) for s in self.map_maxima]},
                "warnings": self.warnings}
