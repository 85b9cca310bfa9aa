"""The daemon's two compute stages, each its own thread: the engine stage (batches of waiting
frames -> features) hands each batch to the scoring stage (features -> verdicts -> the writer's
queue), so the engine runs the next batch while the previous one is scored (two cores, both busy).
A frame already recorded (a restart after a crash between commit and move) skips both."""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Optional

from inspector.pipeline import InspectionPipeline
from inspector.retry import Incident
from inspector.service_health import Heartbeat
from inspector.storage import ResultStore, StorageUnavailable
from inspector.types import Frame, Verdict, VerdictKind

log = logging.getLogger("inspector.service")

STOP = object()  # sentinel through the stage queues


def failed_verdicts(pipeline: InspectionPipeline, frames: list[Frame], exc: Exception) -> list[Verdict]:
    return [pipeline.error_verdict(f, f"inference failed: {type(exc).__name__}: {exc}") for f in frames]


class EngineStage:
    def __init__(self, pipeline: InspectionPipeline, store: ResultStore, frames: "queue.Queue[Frame]",
                 extracted: "queue.Queue[object]", *, max_batch: int, batch_wait_s: float, stop_event: threading.Event,
                 heartbeat: Heartbeat, db_incident: Incident, metrics):
        self.pipeline, self.store = pipeline, store
        self.frames, self.extracted = frames, extracted
        self.max_batch, self.batch_wait = max_batch, batch_wait_s
        self.stop_event, self.heartbeat, self.db_incident, self.metrics = stop_event, heartbeat, db_incident, metrics

    def take_batch(self) -> list[Frame]:
        """What is waiting, up to max_batch: the first frame within 0.2 s, more within batch_wait."""
        try:
            first = self.frames.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.batch_wait
        while len(batch) < self.max_batch:
            try:
                left = deadline - time.monotonic()
                batch.append(self.frames.get_nowait() if left <= 0 else self.frames.get(timeout=left))
            except queue.Empty:
                break
        return batch

    def run(self) -> None:
        try:
            while True:
                self.heartbeat.beat()
                batch = self.take_batch()
                if not batch:
                    if self.stop_event.is_set() and self.frames.empty():
                        return
                    continue
                self.metrics.set_queue_depth(self.frames.qsize())
                fresh, done = [], []
                for f in batch:
                    recorded = self._recorded(f)
                    if recorded:
                        done.append(Verdict(frame=f, kind=VerdictKind(recorded), score=None, threshold=None,
                                            already_recorded=True))
                    else:
                        fresh.append(f)
                extracted = None
                if fresh:
                    try:
                        extracted = self.pipeline.extract(fresh)
                    except Exception as exc:  # an engine failure must not kill the daemon or lose frames
                        log.exception("inference failed for %d frame(s)", len(fresh))
                        done.extend(failed_verdicts(self.pipeline, fresh, exc))
                self.extracted.put((extracted, done))
        finally:
            self.extracted.put(STOP)

    def _recorded(self, frame: Frame) -> Optional[str]:
        """The verdict already committed for this file (restart after a crash), if any."""
        if not frame.key or not frame.from_backlog:
            return None  # a file that arrived while we run has no earlier row (record() dedups anyway)
        while True:
            try:
                hit = self.store.find_by_frame_key(frame.key)
                # no incident.clear() here: reads still work while another connection holds the
                # write lock (WAL), so only the writer's commit says the problem is over
                return hit[1] if hit else None
            except StorageUnavailable as exc:
                self.db_incident.hit(str(exc))
                if self.stop_event.wait(1.0):
                    return None


class ScoringStage:
    def __init__(self, pipeline: InspectionPipeline, extracted: "queue.Queue[object]",
                 verdicts: "queue.Queue[object]"):
        self.pipeline, self.extracted, self.verdicts = pipeline, extracted, verdicts

    def run(self) -> None:
        try:
            while True:
                item = self.extracted.get()
                if item is STOP:
                    return
                extracted, verdicts = item
                if extracted is not None:
                    try:
                        verdicts = verdicts + self.pipeline.score(extracted)
                    except Exception as exc:
                        log.exception("scoring failed for %d frame(s)", len(extracted.frames))
                        verdicts = verdicts + failed_verdicts(self.pipeline, list(extracted.frames), exc)
                for v in verdicts:
                    self.verdicts.put(v)
        finally:
            self.verdicts.put(STOP)
