"""InspectionPipeline: frames -> verdicts (preprocess -> engine -> scorer -> judge).

Bad frames never stop the batch: a frame that failed to decode or preprocess becomes an
``error`` verdict and the rest go through.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from engines.base import Engine
from inspector.decode import FrameError
from inspector.preprocess import Preprocessor
from inspector.types import Frame, RoiTransform, Verdict, VerdictKind
from inspector.verdict import Judge


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class InspectionPipeline:
    def __init__(self, preprocessor: Preprocessor, engine: Engine, scorer, judge: Judge, bundle_id: str):
        self.preprocessor = preprocessor
        self.engine = engine
        self.scorer = scorer
        self.judge = judge
        self.bundle_id = bundle_id
        self.input_hw = (preprocessor.spec.height, preprocessor.spec.width)

    def error_verdict(self, frame: Frame, reason: str) -> Verdict:
        return Verdict(frame=frame, kind=VerdictKind.ERROR, score=None, threshold=self.judge.image_threshold,
                       bundle_id=self.bundle_id, timings_ms={"decode": frame.decode_ms}, error=reason)

    def inspect(self, frames: Sequence[Frame]) -> list[Verdict]:
        """Inspect a batch; verdicts come back in the order of ``frames``."""
        results: list[Verdict | None] = [None] * len(frames)
        tensors: list[np.ndarray] = []
        transforms: list[RoiTransform] = []
        ok: list[int] = []
        pre_ms: list[float] = []
        for i, f in enumerate(frames):
            if f.error is not None or f.image is None:
                results[i] = self.error_verdict(f, f.error or "no image")
                continue
            t0 = time.perf_counter()
            try:
                t, tr = self.preprocessor.prepare(f.image, self.preprocessor.roi_by_source.get(f.source))
            except FrameError as exc:
                results[i] = self.error_verdict(f, str(exc))
                continue
            pre_ms.append(_ms(t0))
            tensors.append(t)
            transforms.append(tr)
            ok.append(i)
        if ok:
            n = len(ok)
            t0 = time.perf_counter()
            features = self.engine.run(np.stack(tensors))
            inf_ms = _ms(t0) / n
            t0 = time.perf_counter()
            scores = self.scorer.score(features, self.input_hw)
            score_ms = _ms(t0) / n
            for k, i in enumerate(ok):
                f = frames[i]
                t0 = time.perf_counter()
                score = float(scores.image_scores[k])
                kind = self.judge.decide(score)
                pmap = None if scores.pixel_maps is None else scores.pixel_maps[k]
                regions = self.judge.regions(pmap, transforms[k]) if kind is VerdictKind.FAIL else ()
                judge_ms = _ms(t0)
                timings = {"decode": f.decode_ms, "preprocess": pre_ms[k], "inference": inf_ms,
                           "scoring": score_ms, "judge": judge_ms}
                timings["total"] = sum(timings.values())
                results[i] = Verdict(frame=f, kind=kind, score=score, threshold=self.judge.image_threshold,
                                     regions=regions, bundle_id=self.bundle_id, timings_ms=timings,
                                     pixel_map=pmap, transform=transforms[k])
        return [r for r in results if r is not None]
