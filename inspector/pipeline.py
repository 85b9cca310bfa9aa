"""InspectionPipeline: frames -> verdicts (preprocess -> engine -> scorer -> judge).

Bad frames never stop the batch: a frame that failed to decode or preprocess becomes an
``error`` verdict and the rest go through.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from engines.base import Engine
from inspector.align import unalign_to_frame
from inspector.decode import FrameError
from inspector.preprocess import Preprocessor
from inspector.types import Frame, RoiTransform, Verdict, VerdictKind
from inspector.verdict import Judge


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class InspectionPipeline:
    def __init__(self, preprocessor: Preprocessor, engine: Engine, scorer, judge: Judge, bundle_id: str, *,
                 maps_for_passes: bool = True):
        self.preprocessor = preprocessor
        self.engine = engine
        self.scorer = scorer
        self.judge = judge
        self.bundle_id = bundle_id
        self.grid = preprocessor.grid
        # the scorer's maps cover the padded work image; verdict maps its content (the ROI's view)
        self.input_hw = self.grid.work_hw
        # Pixel maps for passing frames too? Fails always get one (regions, heatmap). The daemon
        # turns this off unless heatmaps are drawn for passes (output.heatmaps_for_passes).
        self.maps_for_passes = maps_for_passes

    def error_verdict(self, frame: Frame, reason: str) -> Verdict:
        return Verdict(frame=frame, kind=VerdictKind.ERROR, score=None, threshold=self.judge.image_threshold,
                       bundle_id=self.bundle_id, timings_ms={"decode": frame.decode_ms}, error=reason)

    def inspect(self, frames: Sequence[Frame]) -> list[Verdict]:
        """Inspect a batch; verdicts come back in the order of ``frames``."""
        return self.score(self.extract(frames))

    def extract(self, frames: Sequence[Frame]) -> "Extracted":
        """Stage 1: preprocess and run the engine. Bad frames become error verdicts here."""
        ex = Extracted(frames=tuple(frames), results=[None] * len(frames))
        tensors: list[np.ndarray] = []
        for i, f in enumerate(frames):
            if f.error is not None or f.image is None:
                ex.results[i] = self.error_verdict(f, f.error or "no image")
                continue
            t0 = time.perf_counter()
            try:
                t, tr = self.preprocessor.prepare(f.image, self.preprocessor.roi_by_source.get(f.source))
            except FrameError as exc:
                ex.results[i] = self.error_verdict(f, str(exc))
                continue
            ex.pre_ms.append(_ms(t0))
            tensors.append(t)
            ex.transforms.append(tr)
            ex.ok.append(i)
        if ex.ok:
            t0 = time.perf_counter()
            # every tile of every frame in one call (engines split by their max_batch), then one
            # stitched output map per frame
            outputs = self.engine.run(self.preprocessor.tiles(tensors))
            ex.features = self.grid.stitch(outputs, len(tensors))
            ex.works = tensors  # the guides of maps refined by their frame
            ex.inference_ms = _ms(t0) / len(ex.ok)
        return ex

    def score(self, ex: "Extracted") -> list[Verdict]:
        """Stage 2: scorer and judge. Runs on another thread than ``extract`` in the daemon, so
        the engine works on the next batch meanwhile."""
        results = list(ex.results)
        if ex.ok:
            n = len(ex.ok)
            t0 = time.perf_counter()
            scores = self.scorer.score(ex.features, self.input_hw)
            score_ms = _ms(t0) / n
            for k, i in enumerate(ex.ok):
                f = ex.frames[i]
                score = float(scores.image_scores[k])
                kind = self.judge.decide(score)
                t0 = time.perf_counter()
                wanted = kind is VerdictKind.FAIL or self.maps_for_passes
                pmap = scores.pixel_map(k, ex.works[k] if ex.works else None) if wanted else None
                if pmap is not None:
                    pmap = self.grid.content(pmap)  # the padding is not part of the frame
                map_ms = _ms(t0)  # part of scoring: upsampling + smoothing this frame's map
                t0 = time.perf_counter()
                if pmap is not None and ex.transforms[k].align is not None:
                    pmap = unalign_to_frame(pmap, ex.transforms[k])  # back to the frame's own pose
                regions = self.judge.regions(pmap, ex.transforms[k]) if kind is VerdictKind.FAIL else ()
                judge_ms = _ms(t0)
                timings = {"decode": f.decode_ms, "preprocess": ex.pre_ms[k], "inference": ex.inference_ms,
                           "scoring": score_ms + map_ms, "judge": judge_ms}
                timings["total"] = sum(timings.values())
                results[i] = Verdict(frame=f, kind=kind, score=score, threshold=self.judge.image_threshold,
                                     regions=regions, bundle_id=self.bundle_id, timings_ms=timings,
                                     pixel_map=pmap, transform=ex.transforms[k])
        return [r for r in results if r is not None]


@dataclass
class Extracted:
    """A batch between the engine stage and the scoring stage."""

    frames: tuple[Frame, ...]
    results: list[Optional[Verdict]]  # error verdicts already decided, else None
    ok: list[int] = field(default_factory=list)  # indices of frames that went through the engine
    transforms: list[RoiTransform] = field(default_factory=list)
    pre_ms: list[float] = field(default_factory=list)
    features: Optional[dict[str, np.ndarray]] = None
    works: list[np.ndarray] = field(default_factory=list)  # the work images of ``ok``, float32 CHW
    inference_ms: float = 0.0
