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
"""
from __future__ import annotations

import errno
import json
import logging
import os
import queue
import signal
import threading
import time
import traceback
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

from engines.atomicfile import atomic_write_bytes
from inspector.heatmap import render_overlay, write_png_atomic
from inspector.metrics import Metrics
from inspector.names import printable_name
from inspector.outputs import OutputLayout, move_file
from inspector.pipeline import InspectionPipeline
from inspector.storage import ResultStore, StorageUnavailable
from inspector.systemd import SystemdNotifier
from inspector.types import Frame, Verdict, VerdictKind

log = logging.getLogger("inspector.service")

_STOP = object()  # sentinel through the verdict queue
GROUP_COMMIT_MAX = 16  # verdicts already waiting are committed in one transaction
# errors of output files that can clear while we wait (space freed, remount, permissions or a
# folder fixed): retried, once-per-incident logging; anything else is a per-frame error
_RETRYABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.ENOTDIR)


class _Incident:
    """Logs a recurring problem once when it starts and once when it clears, not per frame."""

    def __init__(self, what: str, progress: Optional["_Progress"] = None):
        self.what = what
        self.since: Optional[float] = None
        self.progress = progress

    def hit(self, detail: str) -> None:
        if self.progress is not None:
            self.progress.last_error = f"{self.what}: {detail}"
        if self.since is None:
            self.since = time.monotonic()
            log.error("%s: %s; frames stay in the inbox and are retried", self.what, detail)

    def clear(self) -> None:
        if self.since is not None:
            log.info("%s: recovered after %.1fs", self.what, time.monotonic() - self.since)
            self.since = None


class _Progress:
    """Frames taken from the sources and not yet through the writer, and when the writer last got
    one through: a stall is frames waiting with no progress for ``stall_seconds``."""

    def __init__(self):
        self._lock = threading.Lock()
        self.waiting = 0
        self._since = time.monotonic()  # the last frame through, or when frames began to wait
        self.last_error: Optional[str] = None

    def taken(self) -> None:
        with self._lock:
            if self.waiting == 0:
                self._since = time.monotonic()
            self.waiting += 1

    def not_taken(self) -> None:
        with self._lock:
            self.waiting -= 1

    def through(self) -> None:
        with self._lock:
            self.waiting -= 1
            self._since = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds without progress while frames wait (0 when none wait)."""
        with self._lock:
            return time.monotonic() - self._since if self.waiting else 0.0


class InspectionService:
    def __init__(self, pipeline: InspectionPipeline, store: ResultStore, sources: Sequence, layout: OutputLayout,
                 *, max_batch: int, batch_wait_ms: float, queue_size: int, status_path: Optional[Path] = None,
                 notifier: Optional[SystemdNotifier] = None, metrics: Optional[Metrics] = None,
                 periodic: Sequence = (), stall_seconds: float = 60.0, sinks=None):
        self.pipeline = pipeline
        self.store = store
        self.sources = list(sources)
        self.layout = layout
        self.max_batch = max_batch
        self.batch_wait = batch_wait_ms / 1000.0
        self.frames: "queue.Queue[Frame]" = queue.Queue(maxsize=queue_size)
        self.extracted: "queue.Queue[object]" = queue.Queue(maxsize=2)  # engine -> scoring
        self.verdicts: "queue.Queue[object]" = queue.Queue(maxsize=queue_size * 2)
        self.status_path = status_path
        self.notifier = notifier or SystemdNotifier()
        self.metrics = metrics or Metrics()
        self.periodic = list(periodic)  # (interval_s, callable) run on a low-priority thread
        self.stop_event = threading.Event()
        self._heartbeat = time.monotonic()
        self._processed = 0
        self._counts = {"pass": 0, "fail": 0, "error": 0}
        self._last: Optional[str] = None
        self._latencies: deque[float] = deque(maxlen=500)
        self._started = datetime.now(timezone.utc)
        self.stall_seconds = stall_seconds
        self._progress = _Progress()
        self._stalled = False
        self._fatal: Optional[str] = None  # why the daemon must exit non-zero (the database file is gone)
        self._give_up_at: Optional[float] = None  # stopping: when retries give up
        self._db_incident = _Incident("results database unavailable", self._progress)
        self._disk_incident = _Incident("cannot write output files", self._progress)
        self._move_incident = _Incident("cannot move frames to the output folders", self._progress)
        self._by_source = {s.name: s for s in self.sources}
        self.sinks = sinks  # inspector/sinks/manager.SinkManager (started and stopped by `run`): its status

    # ------------------------------------------------------------ sources -> queue
    def emit(self, frame: Frame) -> bool:
        self._progress.taken()  # before the put: the writer may be through with it before put returns
        try:
            self.frames.put_nowait(frame)
            return True
        except queue.Full:
            self._progress.not_taken()
            return False

    # ------------------------------------------------------------ inference worker
    def _take_batch(self) -> list[Frame]:
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

    def _inference_loop(self) -> None:
        """Engine stage: batches of waiting frames -> features, handed to the scoring thread, so
        the engine runs the next batch while the previous one is scored (two cores, both busy)."""
        try:
            while True:
                self._heartbeat = time.monotonic()
                batch = self._take_batch()
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
                        done.extend(self._failed(fresh, exc))
                self.extracted.put((extracted, done))
        finally:
            self.extracted.put(_STOP)

    def _scoring_loop(self) -> None:
        """Scoring stage: features -> verdicts -> the writer."""
        try:
            while True:
                item = self.extracted.get()
                if item is _STOP:
                    return
                extracted, verdicts = item
                if extracted is not None:
                    try:
                        verdicts = verdicts + self.pipeline.score(extracted)
                    except Exception as exc:
                        log.exception("scoring failed for %d frame(s)", len(extracted.frames))
                        verdicts = verdicts + self._failed(list(extracted.frames), exc)
                for v in verdicts:
                    self.verdicts.put(v)
        finally:
            self.verdicts.put(_STOP)

    def _failed(self, frames: list[Frame], exc: Exception) -> list[Verdict]:
        return [self.pipeline.error_verdict(f, f"inference failed: {type(exc).__name__}: {exc}") for f in frames]

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
                self._db_incident.hit(str(exc))
                if self.stop_event.wait(1.0):
                    return None

    # ------------------------------------------------------------ writer
    def _writer_loop(self) -> None:
        while True:
            item = self.verdicts.get()
            if item is _STOP:
                return
            group = [item]
            # group commit: what is already waiting goes into the same transaction
            stop_after = False
            while len(group) < GROUP_COMMIT_MAX:
                try:
                    nxt = self.verdicts.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop_after = True
                    break
                group.append(nxt)
            try:
                self._write(group)
            except Exception:
                # A bug must not stop the only writer (every later frame would pile up in the
                # queues). The files stay in the inbox and stay "in flight", so they are not
                # retried in a loop; the next start tries them again.
                names = [printable_name(os.path.basename(v.frame.origin_path)) if v.frame.origin_path else v.frame.id
                         for v in group]
                log.exception("%s: cannot record; left in the inbox until the next start", ", ".join(names))
                self._progress.last_error = f"cannot record: {traceback.format_exc(limit=0).strip()}"
            if stop_after:
                return

    def _write(self, group: list[Verdict]) -> None:
        """Heatmaps, then one transaction for the group's rows, then the file moves."""
        if self._fatal is None and (why := self.store.replaced_file()):
            # Commits would go on into the unlinked (or replaced) file and be gone at the next
            # start, with their frames already moved out of the inbox: stop before that.
            self._fatal = why
            self._progress.last_error = why
            log.error("%s; restarting: exiting with status 1 so that systemd starts the daemon again on the "
                      "database now at that path (frames not recorded yet stay in the inbox)", why)
            self.stop_event.set()
        if self._fatal is not None:
            return self._abandon(group, quiet=True)
        dests = [self.layout.frame_destination(v) for v in group]
        fresh = [i for i, v in enumerate(group) if not v.already_recorded]
        items = []
        for i in fresh:
            v = group[i]
            heatmap = self._retry(lambda: self._heatmap(v), self._disk_incident)
            if heatmap is False:
                return self._abandon(group)
            items.append((v, v.frame.key, heatmap, str(dests[i]) if dests[i] else None))
        if items:
            ok = self._retry(lambda: self.store.record_many(items), self._db_incident)
            if ok is False:
                return self._abandon(group)
            for i in fresh:
                self._count(group[i])
        for v, dest in zip(group, dests):
            f = v.frame
            stays = dest is None  # output.keep_in_inbox
            if f.origin_path and dest is not None:
                try:
                    # a full disk (or an unwritable folder) is waited out here, logged once, and
                    # the frame moves as soon as it can; only a stop gives up (the next start moves it)
                    if self._retry(lambda: move_file(f.origin_path, dest), self._move_incident) is False:
                        stays = True
                except FileNotFoundError:
                    log.warning("%s: vanished from the inbox before it could be moved",
                                os.path.basename(f.origin_path))
                except OSError as exc:
                    stays = True  # the next start retries the move
                    log.error("%s: recorded, but cannot move to %s (%s)", os.path.basename(f.origin_path), dest,
                              exc.strerror)
            self._progress.through()
            self._finished(f, recorded_and_kept=stays)

    def _heatmap(self, v: Verdict) -> Optional[str]:
        if not self.layout.wants_heatmap(v):
            return None
        path = self.layout.heatmap_path(v)
        label = f"{v.kind.value.upper()}  {v.score:.3f} / {v.threshold:.3f}"
        img = render_overlay(v.frame.image, v.pixel_map, v.transform, self.pipeline.judge.pixel_threshold or 1.0,
                             v.regions, label)
        write_png_atomic(path, img)
        return str(path)

    def _retry(self, action, incident: _Incident):
        """Run ``action`` until it succeeds; transient DB/disk failures wait and retry. Returns
        False if the daemon is stopping and the condition has not cleared within 10 s of the stop
        (one deadline for all frames, so a drain with the disk full ends in time)."""
        delay = 0.2
        while True:
            try:
                result = action()
                incident.clear()
                return result
            except StorageUnavailable as exc:
                incident.hit(str(exc))
            except OSError as exc:
                if exc.errno not in _RETRYABLE_ERRNOS:
                    raise
                incident.hit(f"{exc.strerror} ({getattr(exc, 'filename', '')})")
            if self.stop_event.is_set():
                self._give_up_at = self._give_up_at or time.monotonic() + 10.0
                if time.monotonic() > self._give_up_at:
                    return False
            # Waiting out a known incident is not a hang: keep the systemd watchdog fed (a restart
            # would not unlock the database or free the disk, only repeat the start-up), until it
            # lasts stall_seconds: then run() stops the pings (see _check_stall).
            end = time.monotonic() + delay
            while (left := end - time.monotonic()) > 0:
                self._heartbeat = time.monotonic()
                time.sleep(min(left, 1.0))
            self._heartbeat = time.monotonic()
            delay = min(delay * 2, 5.0)

    def _abandon(self, group: list[Verdict], quiet: bool = False) -> None:
        for v in group:
            if not quiet:
                log.warning("%s: left in the inbox for the next start", v.frame.origin_path or v.frame.id)
            self._finished(v.frame)

    def _finished(self, f: Frame, recorded_and_kept: bool = False) -> None:
        """Hand the file back to its source; a recorded file that stays in the inbox is passed
        with its key, so the source does not take it again while it is the same file."""
        src = self._by_source.get(f.source)
        if f.origin_path and hasattr(src, "finished"):
            src.finished(f.origin_path, recorded_key=f.key if recorded_and_kept else None)

    def _count(self, v: Verdict) -> None:
        f = v.frame
        self._processed += 1
        self._counts[v.kind.value] += 1
        self._heartbeat = time.monotonic()
        latency_ms = (datetime.now(timezone.utc) - f.captured_at).total_seconds() * 1000.0
        total = v.timings_ms.get("total")
        if total is not None:
            self._latencies.append(total)
        self.metrics.count_frame(f.source, v.kind.value)
        self.metrics.observe_timings_ms(v.timings_ms)
        name = os.path.basename(f.origin_path) if f.origin_path else f.id
        self._last = f"{v.kind.value} {name}"
        if v.kind is VerdictKind.ERROR:
            log.info("%s %r error: %s", f.source, name, v.error)
        else:
            log.info("%s %r %s score=%.4f thr=%.4f regions=%d %.1fms (file to row %.1fms)", f.source, name,
                     v.kind.value, v.score, v.threshold, len(v.regions), total or 0.0, latency_ms)

    # ------------------------------------------------------------ lifecycle
    def request_stop(self, *_args) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: finishing frames in hand")
            self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, *, ready_timeout: float = 30.0) -> int:
        workers = [threading.Thread(target=self._inference_loop, name="inference", daemon=True),
                   threading.Thread(target=self._scoring_loop, name="scoring", daemon=True),
                   threading.Thread(target=self._writer_loop, name="writer", daemon=True)]
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
            stalled = self._check_stall()
            if not stalled and time.monotonic() - self._heartbeat < max(5.0, (interval or 10.0) / 2):
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
        log.info("stopped after %d frames (%s)", self._processed,
                 ", ".join(f"{k} {n}" for k, n in self._counts.items()))
        return 1 if self._fatal else 0

    def _check_stall(self) -> bool:
        """Frames waiting and none through for stall_seconds: say so once, in the log, the
        metrics and the status; the caller stops feeding the watchdog."""
        age = self._progress.stalled_for()
        stalled = age >= self.stall_seconds
        if stalled and not self._stalled:
            log.error("stalled: %s; no more WATCHDOG=1 to systemd, which restarts the service", self._stall_text(age))
        elif self._stalled and not stalled:
            log.info("stall over: frames are recorded again")
        self._stalled = stalled
        self.metrics.stalled.set(1 if stalled else 0)
        return stalled

    def _stall_text(self, age: float) -> str:
        return (f"no commit for {age:.0f} s while {self._progress.waiting} frames wait "
                f"(last error: {self._progress.last_error or 'none'})")

    def _periodic_loop(self, interval_s: float, action) -> None:
        while not self.stop_event.wait(interval_s):
            try:
                action()
            except Exception:
                log.exception("periodic task %s failed", getattr(action, "__name__", action))

    def _status_line(self) -> str:
        return (f"{self._processed} frames (pass {self._counts['pass']}, fail {self._counts['fail']}, "
                f"error {self._counts['error']}); queue {self.frames.qsize()}; last: {self._last or '-'}")

    def status(self) -> dict:
        lat = sorted(self._latencies)
        p = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)) if lat else (lambda q: None)
        return {"pid": os.getpid(), "started_at": self._started.isoformat(),
                "updated_at": datetime.now(timezone.utc).isoformat(), "frames_processed": self._processed,
                "counts": dict(self._counts), "queue_depth": self.frames.qsize(), "bundle_id": self.pipeline.bundle_id,
                "engine": {"type": self.pipeline.engine.kind, "precision": self.pipeline.engine.precision},
                "last_verdict": self._last, "latency_p50_ms": p(0.5), "latency_p95_ms": p(0.95),
                "frames_waiting": self._progress.waiting,
                "stalled": self._stall_text(self._progress.stalled_for()) if self._stalled else None,
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
