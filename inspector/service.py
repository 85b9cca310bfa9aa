"""The daemon's machinery: source threads -> bounded queue -> one engine worker (batches what is
waiting) -> one scoring worker -> bounded queue -> one writer (heatmaps, then the rows of every
verdict already waiting in one transaction, then the file moves).

A file leaves the inbox only after its row is committed, so a crash at any moment loses nothing;
a restart finds the row by the file's key and only finishes the move, so nothing is counted
twice. A locked database, a full disk or an unwritable output folder keeps the frame in hand and
retries (logged once per incident). Frames waiting with nothing committed for ``stall_seconds``
is a stall: status and metrics say so, and the systemd watchdog is no longer fed, so systemd
restarts the service. A database file deleted or replaced under the daemon stops it (exit 1)
before anything more is committed to the old file. SIGTERM/SIGINT stop the sources, drain the
queues and exit.

Where each part lives: the engine and scoring stages in inspector/stages.py, the writer (and the
one place verdicts are known committed) in inspector/writer.py, the retry policy in
inspector/retry.py, heartbeat / frames in hand / tally / stall in inspector/service_health.py
(each shared piece behind its own lock). This module wires them: queues, threads, sources,
signals, the systemd and status-file loop.
"""
from __future__ import annotations

import json
import logging
import queue
import signal
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from engines.atomicfile import atomic_write_bytes
from inspector.metrics import Metrics
from inspector.outputs import OutputLayout
from inspector.pipeline import InspectionPipeline
from inspector.retry import Incident
from inspector.service_health import Heartbeat, Progress, StallWatch, Tally
from inspector.stages import EngineStage, ScoringStage
from inspector.storage import ResultStore
from inspector.systemd import SystemdNotifier
from inspector.types import Frame
from inspector.writer import VerdictWriter

log = logging.getLogger("inspector.service")


class InspectionService:
    def __init__(self, pipeline: InspectionPipeline, store: ResultStore, sources: Sequence, layout: OutputLayout,
                 *, max_batch: int, batch_wait_ms: float, queue_size: int, status_path: Optional[Path] = None,
                 notifier: Optional[SystemdNotifier] = None, metrics: Optional[Metrics] = None,
                 periodic: Sequence = (), stall_seconds: float = 60.0, sinks=None):
        self.pipeline = pipeline
        self.store = store
        self.sources = list(sources)
        self.frames: "queue.Queue[Frame]" = queue.Queue(maxsize=queue_size)
        extracted: "queue.Queue[object]" = queue.Queue(maxsize=2)  # engine -> scoring
        verdicts: "queue.Queue[object]" = queue.Queue(maxsize=queue_size * 2)  # scoring -> writer
        self.status_path = status_path
        self.notifier = notifier or SystemdNotifier()
        self.metrics = metrics or Metrics()
        self.periodic = list(periodic)  # (interval_s, callable) run on a low-priority thread
        self.stop_event = threading.Event()
        self.heartbeat = Heartbeat()
        self.progress = Progress()
        self.tally = Tally()
        self.stall = StallWatch(self.progress, stall_seconds, self.metrics)
        db_incident = Incident("results database unavailable", self.progress)  # look-ups and commits alike
        self.engine_stage = EngineStage(pipeline, store, self.frames, extracted, max_batch=max_batch,
                                        batch_wait_s=batch_wait_ms / 1000.0, stop_event=self.stop_event,
                                        heartbeat=self.heartbeat, db_incident=db_incident, metrics=self.metrics)
        self.scoring_stage = ScoringStage(pipeline, extracted, verdicts)
        self.writer = VerdictWriter(pipeline, store, layout, verdicts, sources={s.name: s for s in self.sources},
                                    stop_event=self.stop_event, heartbeat=self.heartbeat, progress=self.progress,
                                    tally=self.tally, db_incident=db_incident, metrics=self.metrics)
        self.sinks = sinks  # inspector/sinks/manager.SinkManager (started and stopped by `run`): its status

    # ------------------------------------------------------------ sources -> queue
    def emit(self, frame: Frame) -> bool:
        self.progress.taken()  # before the put: the writer may be through with it before put returns
        try:
            self.frames.put_nowait(frame)
            return True
        except queue.Full:
            self.progress.not_taken()
            return False

    # ------------------------------------------------------------ lifecycle
    def request_stop(self, *_args) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: finishing frames in hand")
            self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, *, ready_timeout: float = 30.0) -> int:
        workers = [threading.Thread(target=self.engine_stage.run, name="inference", daemon=True),
                   threading.Thread(target=self.scoring_stage.run, name="scoring", daemon=True),
                   threading.Thread(target=self.writer.run, name="writer", daemon=True)]
        for t in workers:
            t.start()
        for periodic in self.periodic:
            threading.Thread(target=self._periodic_loop, args=periodic, name="periodic", daemon=True).start()
        for s in self.sources:
            s.start(self.emit)
        deadline = time.monotonic() + ready_timeout
        for s in self.sources:
            # a SIGTERM while a big backlog is being queued must not wait for the whole backlog
            while (hasattr(s, "wait_backlog") and not self.stop_event.is_set()
                   and not s.wait_backlog(min(0.1, max(0.0, deadline - time.monotonic())))
                   and time.monotonic() < deadline):
                pass
        self.notifier.ready(self._status_line())
        log.info("ready: %d source(s), bundle %s", len(self.sources), self.pipeline.bundle_id)
        interval = self.notifier.watchdog_interval()
        ping_every = min(1.0, interval / 2) if interval else 1.0
        last_status = 0.0
        while not self.stop_event.wait(ping_every):
            # WATCHDOG only while the inference worker is turning (it beats at least every 0.2 s)
            # and frames get through the writer (a stall is not waited out forever)
            stalled = self.stall.check()
            if not stalled and self.heartbeat.age() < max(5.0, (interval or 10.0) / 2):
                self.notifier.watchdog()
            if time.monotonic() - last_status >= 2.0:
                last_status = time.monotonic()
                self.notifier.status(self._status_line())
                self._write_status_file()
            if not all(t.is_alive() for t in workers):
                log.error("%s worker died; exiting so systemd restarts the service",
                          next(t.name for t in workers if not t.is_alive()))
                self.stop_event.set()
                break
        self.notifier.stopping("draining")
        for s in self.sources:
            s.stop()
        for t in workers:
            t.join(timeout=60)
        self._write_status_file()
        log.info("stopped after %s", self.tally.summary())
        return 1 if self.writer.fatal else 0

    def _periodic_loop(self, interval_s: float, action) -> None:
        while not self.stop_event.wait(interval_s):
            try:
                action()
            except Exception:
                log.exception("periodic task %s failed", getattr(action, "__name__", action))

    # ------------------------------------------------------------ status
    def _status_line(self) -> str:
        return self.tally.line(self.frames.qsize())

    def status(self) -> dict:
        return {**self.tally.status(), "queue_depth": self.frames.qsize(), "bundle_id": self.pipeline.bundle_id,
                "engine": {"type": self.pipeline.engine.kind, "precision": self.pipeline.engine.precision},
                "frames_waiting": self.progress.waiting, "stalled": self.stall.text(),
                "streams": {s.name: s.stats() for s in self.sources},
                "sinks": self.sinks.status() if self.sinks is not None else {}}

    def _write_status_file(self) -> None:
        if self.status_path is None:
            return
        try:
            # rewritten every 2 s and only informational: no fsync
            atomic_write_bytes(self.status_path, json.dumps(self.status()).encode("utf-8"), prefix=".status-",
                               fsync=False)
        except OSError as exc:
            log.debug("status file %s not written: %s", self.status_path, exc)
