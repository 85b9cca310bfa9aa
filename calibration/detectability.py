"""What a calibrated threshold lets through: the escape rate on synthetic defects by size and kind
(calibration/synthetic_defects.py pasted into the held-out golden images, which the model was not
fitted on), and on real defect images when the user has some (`calibrate --defects DIR`).

A defect is found when its image score is above the image threshold: the daemon's pass/fail rule
(inspector/verdict.py). Sizes are in frame pixels (the camera's, before ROI and resize), from
``calibration.min_defect_px``: min, 2×min, 4×min. The number of synthetic images is bounded
(``calibration.synthetic_defects``), so this adds seconds to a calibration, not minutes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from calibration.ahead import made_ahead
from calibration.synthetic_defects import KINDS, DefectSynthesizer
from calibration.thresholds import frr_upper_bound

ScoreImages = Callable[[list], np.ndarray]  # images (BGR/grey uint8) -> image scores
CHUNK = 16  # images scored at a time: frames can be large


def defect_sizes(min_defect_px: float) -> list[int]:
    """The sizes tested: the smallest defect that matters, and twice and four times that."""
    m = max(1, int(round(min_defect_px)))
    return [m, 2 * m, 4 * m]


@dataclass(frozen=True)
class Rate:
    n: int  # defects scored
    found: int  # of them, above the image threshold

    @property
    def found_share(self) -> float:
        return self.found / self.n if self.n else float("nan")

    @property
    def escape_rate(self) -> float:
        return 1.0 - self.found_share

    def to_json(self) -> dict:
        return {"n": self.n, "found": self.found, "escape_rate": round(self.escape_rate, 4),
                # the data alone: escape rate at most this, with 95% confidence
                "escape_upper_95": round(frr_upper_bound(self.n - self.found, self.n), 4) if self.n else None}


@dataclass(frozen=True)
class Detectability:
    threshold: float
    min_contrast: float  # every synthetic defect changes its pixels by at least this (grey levels)
    by_size: dict[int, Rate]  # size (frame px) -> all kinds together
    by_kind: dict[str, dict[int, Rate]]  # kind -> size -> rate
    real: Optional[Rate] = None  # the --defects images
    sizes_left_out: list[int] = field(default_factory=list)  # too large for the images
    seconds: float = 0.0

    def statement(self) -> str:
        """'defects >= 32 px found 98% of the time (n=40), >= 16 px 90% (n=40), ...' (largest first)."""
        parts = []
        for k, size in enumerate(sorted(self.by_size, reverse=True)):
            r = self.by_size[size]
            pct = f"{100 * r.found_share:.0f}%"
            parts.append(f"defects >= {size} px found {pct} of the time (n={r.n})" if k == 0
                         else f">= {size} px {pct} (n={r.n})")
        text = ", ".join(parts) if parts else "no synthetic defect fits these images"
        if self.real is not None and self.real.n:
            text += f"; your defect images: {100 * self.real.found_share:.0f}% found (n={self.real.n})"
        return text

    def to_json(self) -> dict:
        return {
            "threshold": self.threshold,
            "found_when": "image score > image threshold (model fitted without the held-out images)",
            "min_contrast": self.min_contrast,
            "kinds": list(self.by_kind),
            # lists, smallest size first (JSON object keys would be sorted as text)
            "by_size": [{"size_px": s, **r.to_json()} for s, r in sorted(self.by_size.items())],
            "by_kind": {k: [{"size_px": s, **r.to_json()} for s, r in sorted(v.items())]
                        for k, v in self.by_kind.items()},
            "real_defects": self.real.to_json() if self.real is not None else None,
            "sizes_left_out": list(self.sizes_left_out),
            "statement": self.statement(),
            "seconds": round(self.seconds, 3),
        }


def _score_in_chunks(score_images: ScoreImages, n: int, make: Callable[[int, int], list]) -> np.ndarray:
    """Scores of the ``n`` images ``make(start, stop)`` gives, CHUNK at a time, the next chunk
    made while this one is scored (calibration/ahead.py: in order, so the synthesizer's random
    draws are the same as made one after another)."""
    if not n:
        return np.zeros(0)
    chunks = made_ahead(lambda s: make(s, min(s + CHUNK, n)), range(0, n, CHUNK), "synthetic-defects")
    return np.concatenate([np.asarray(score_images(images), np.float64).ravel() for images in chunks])


def estimate_detectability(score_images: ScoreImages, golden: Sequence[np.ndarray], threshold: float,
                           sizes: Sequence[int], *, kinds: Sequence[str] = KINDS, per_image: int = 2,
                           max_images: int = 120, seed: int = 0, roi: Optional[Sequence[int]] = None,
                           min_contrast: float = 15.0,
                           real_defects: Optional[Sequence[np.ndarray]] = None) -> Detectability:
    """Paste synthetic defects into ``golden`` (held-out good images), score them with
    ``score_images`` and count those above ``threshold``: per size, per kind, and for
    ``real_defects`` when given. At most ``per_image`` defects of a (size, kind) per golden image,
    at most ``max_images`` in all (split evenly over sizes × kinds, at least one each)."""
    t0 = time.perf_counter()
    synth = DefectSynthesizer(golden, seed=seed, min_contrast=min_contrast, roi=roi)
    side = min(min(synth.region(i)[2:]) for i in range(len(golden)))
    fits = [int(s) for s in sizes if 1 <= int(s) <= side / 2]
    left_out = [int(s) for s in sizes if int(s) not in fits]
    cells = [(s, k) for s in fits for k in kinds]
    per_cell = max(1, min(per_image * len(golden), max_images // max(1, len(cells))))
    plan, labels = [], []  # (golden image, kind, size, variant) per synthetic image
    for c, (size, kind) in enumerate(cells):
        for j in range(per_cell):
            plan.append(((j + c) % len(golden), kind, size, j // len(golden)))  # cells spread over the images
            labels.append((size, kind))
    scores = _score_in_chunks(score_images, len(plan), lambda a, b: [
        synth.make(i, kind, size, variant=v).image for i, kind, size, v in plan[a:b]])
    found = scores > threshold
    by_kind: dict[str, dict[int, Rate]] = {k: {} for k in kinds}
    by_size: dict[int, Rate] = {}
    for size in fits:
        in_size = [n for n, (s, _) in enumerate(labels) if s == size]
        by_size[size] = Rate(len(in_size), int(found[in_size].sum()))
        for kind in kinds:
            idx = [n for n, lab in enumerate(labels) if lab == (size, kind)]
            by_kind[kind][size] = Rate(len(idx), int(found[idx].sum()))
    real = None
    if real_defects is not None:
        real_defects = list(real_defects)
        real_scores = _score_in_chunks(score_images, len(real_defects), lambda a, b: real_defects[a:b])
        real = Rate(len(real_scores), int((real_scores > threshold).sum()))
    return Detectability(threshold=float(threshold), min_contrast=float(min_contrast), by_size=by_size,
                         by_kind=by_kind, real=real, sizes_left_out=left_out, seconds=time.perf_counter() - t0)
