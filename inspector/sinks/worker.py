"""One sink on its own thread: read the outbox after the sink's cursor, deliver, move the cursor.

The verdict writer never waits for this thread: it only sets an event after its commit. A
receiver that is down, slow or refusing keeps this thread retrying (with backoff, logged once
per incident) while the events wait in the outbox. The cursor is saved at most every
``flush_s`` and at stop: after a SIGKILL, up to that much is delivered again, with the same
event ids and sequence numbers.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable, Optional

from inspector.errors import InspectorError
from inspector.retry import Incident
from inspector.sinks.base import Sink, SinkError
from inspector.storage.outbox import Event, OutboxReader, OutboxWriter

log = logging.getLogger("inspector.sinks")

BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
TICK_S = 1.0


def _described(what: str, exc: BaseException) -> str:
    """Our own errors read as their message; a library's exception also names its type."""
    text = str(exc) if isinstance(exc, (SinkError, InspectorError)) else f"{type(exc).__name__}: {exc}"
    return f"{what}: {text}"


class SinkWorker:
    """Runs ``sink`` from ``cursor`` (the last outbox id it delivered)."""

    def __init__(self, sink: Sink, reader: OutboxReader, writer: OutboxWriter, cursor: int, *,
                 accepts: Callable[[Event], bool], batch: int = 64, flush_s: float = 0.5,
                 on_delivered: Optional[Callable[[str, int, list[float]], None]] = None):
        self.sink = sink
        self.name = sink.name
        self.reader = reader
        self.writer = writer
        self.cursor = cursor
        self.saved_cursor = cursor
        self.accepts = accepts
        self.batch = batch
        self.flush_s = flush_s
        self.on_delivered = on_delivered
        self.newest = cursor  # the newest outbox id known to be committed
        self.state = "starting"
        self.delivered = 0
        self.incident = Incident(f"sink {sink.name}", consequence="events wait in the outbox and are retried",
                                 logger=log, expected=(SinkError, InspectorError, OSError, TimeoutError))
        self.latencies_ms: deque[float] = deque(maxlen=1000)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._stop_by: Optional[float] = None
        self._thread: Optional[threading.Thread] = None
        self._open = False
        self._restored = False

    # ------------------------------------------------------------ called from other threads
    def wake(self, newest_id: int) -> None:
        """The writer committed events up to ``newest_id`` (runs on the writer thread: cheap)."""
        if newest_id > self.newest:
            self.newest = newest_id
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sink-{self.name}", daemon=True)
        self._thread.start()

    def request_stop(self, grace_s: float) -> None:
        """Deliver what is waiting for up to ``grace_s`` more (only while connected), then close."""
        self._stop_by = time.monotonic() + grace_s
        self._stop.set()
        self._wake.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def backlog(self) -> int:
        return max(0, self.newest - self.cursor)

    # ------------------------------------------------------------ the thread
    def _run(self) -> None:
        backoff = BACKOFF_MIN_S
        last_save = last_tick = time.monotonic()
        try:
            while True:
                stopping = self._stop.is_set()
                if stopping and (not self._open or time.monotonic() >= self._stop_by):
                    return
                if not self._open:
                    self.state = "connecting" if self.incident.since is None else "failing"
                    if not self._try(self._connect, "cannot connect"):
                        backoff = self._pause(backoff)
                        continue
                try:
                    events = self.reader.read_after(self.cursor, self.batch)
                except InspectorError as exc:  # the database (StorageUnavailable): wait for it
                    self.incident.hit(_described("cannot read the outbox", exc), exc)
                    backoff = self._pause(backoff)
                    continue
                now = time.monotonic()
                if now - last_tick >= TICK_S:
                    last_tick = now
                    if not self._try(self.sink.tick, "periodic message failed"):
                        continue
                if not events:
                    self.state = "connected"
                    self.incident.clear(" (0 events waiting)")
                    self._save_cursor()
                    if stopping:
                        return
                    self._wake.wait(TICK_S)
                    self._wake.clear()
                    continue
                chosen = [e for e in events if self.accepts(e)]
                self.state = "delivering"
                if chosen and not self._try(lambda: self.sink.deliver(chosen), "cannot deliver"):
                    backoff = self._pause(backoff)
                    continue
                self._delivered(events, chosen)
                backoff = BACKOFF_MIN_S
                if time.monotonic() - last_save >= self.flush_s:
                    last_save = time.monotonic()
                    self._save_cursor()
        finally:
            self._save_cursor(final=True)
            self._close()
            self.state = "stopped"

    def _connect(self) -> None:
        self.sink.open()
        self._open = True
        if not self._restored:
            # a server sink shows each source's last state again (events up to the cursor)
            self.sink.restore(self.reader.latest_per_source(self.cursor))
            self._restored = True

    def _try(self, action: Callable[[], None], what: str) -> bool:
        try:
            action()
        except Exception as exc:  # any failure of a receiver or library: keep the events, retry
            self.incident.hit(_described(what, exc), exc)
            self._close()
            return False
        return True

    def _close(self) -> None:
        if self._open:
            self._open = False
            try:
                self.sink.close()
            except Exception:
                log.debug("sink %s: close failed", self.name, exc_info=True)

    def _pause(self, backoff: float) -> float:
        self.state = "failing"
        self._stop.wait(backoff)
        return min(backoff * 2, BACKOFF_MAX_S)

    def _delivered(self, events: list[Event], chosen: list[Event]) -> None:
        now = time.monotonic()
        lat = []
        for e in chosen:
            t = self.writer.commit_time(e.id)
            if t is not None:  # committed by this process (a backlog from before a restart has no time here)
                lat.append((now - t) * 1000.0)
        self.latencies_ms.extend(lat)
        self.cursor = events[-1].id
        self.newest = max(self.newest, self.cursor)
        self.delivered += len(chosen)
        self.incident.clear(f" ({self.backlog} event(s) waiting)")
        if self.on_delivered is not None:
            self.on_delivered(self.name, len(chosen), lat)

    def _save_cursor(self, final: bool = False) -> None:
        if self.cursor == self.saved_cursor:
            return
        try:
            self.reader.set_cursor(self.name, self.cursor)
            self.saved_cursor = self.cursor
        except InspectorError as exc:
            # not saved: after a restart these events are delivered again (same ids), nothing is lost
            if final:
                log.warning("sink %s: cursor not saved at stop (%s); events after %d are sent again at the next "
                            "start", self.name, exc, self.saved_cursor)
            else:
                self.incident.hit(_described("cannot save the cursor", exc), exc)

    # ------------------------------------------------------------ status
    def status(self) -> dict:
        lat = sorted(self.latencies_ms)
        pick = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)) if lat else (lambda q: None)
        return {"type": self.sink.kind, "state": self.state, "backlog": self.backlog, "delivered": self.delivered,
                "cursor": self.cursor, "last_error": self.incident.last_error,
                "last_error_at": self.incident.last_error_at,
                "failing_for_s": round(time.monotonic() - self.incident.since, 1) if self.incident.since else None,
                "latency_p50_ms": pick(0.5), "latency_p95_ms": pick(0.95)}
