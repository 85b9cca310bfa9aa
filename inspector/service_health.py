"""What the daemon knows about its own health, shared between its threads, each piece behind
its own lock: the heartbeat (the inference worker turning), frames in hand and the last error
(a stall is frames waiting with nothing through for ``stall_seconds``), and the tally of
verdicts recorded (counts, last verdict, latencies) that status, metrics and systemd read."""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Optional

from inspector.types import Verdict

log = logging.getLogger("inspector.service")


class Heartbeat:
    """When a worker last showed it was turning (monotonic seconds)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._at = time.monotonic()

    def beat(self) -> None:
        with self._lock:
            self._at = time.monotonic()

    def age(self) -> float:
        with self._lock:
            return time.monotonic() - self._at


class Progress:
    """Frames taken from the sources and not yet through the writer, and when the writer last got
    one through: a stall is frames waiting with no progress for ``stall_seconds``."""

    def __init__(self):
        self._lock = threading.Lock()
        self._waiting = 0
        self._since = time.monotonic()  # the last frame through, or when frames began to wait
        self._last_error: Optional[str] = None

    @property
    def waiting(self) -> int:
        with self._lock:
            return self._waiting

    @property
    def last_error(self) -> Optional[str]:
        with self._lock:
            return self._last_error

    def set_error(self, text: str) -> None:
        with self._lock:
            self._last_error = text

    def taken(self) -> None:
        with self._lock:
            if self._waiting == 0:
                self._since = time.monotonic()
            self._waiting += 1

    def not_taken(self) -> None:
        with self._lock:
            self._waiting -= 1

    def through(self) -> None:
        with self._lock:
            self._waiting -= 1
            self._since = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds without progress while frames wait (0 when none wait)."""
        with self._lock:
            return time.monotonic() - self._since if self._waiting else 0.0

    def stall_text(self, age: float) -> str:
        return f"no commit for {age:.0f} s while {self.waiting} frames wait (last error: {self.last_error or 'none'})"


class Tally:
    """The verdicts recorded since start: written by the writer, read by status and the log."""

    def __init__(self):
        self._lock = threading.Lock()
        self.started = datetime.now(timezone.utc)
        self._processed = 0
        self._counts = {"pass": 0, "fail": 0, "error": 0}
        self._last: Optional[str] = None
        self._latencies: deque[float] = deque(maxlen=500)

    def add(self, v: Verdict, name: str) -> None:
        with self._lock:
            self._processed += 1
            self._counts[v.kind.value] += 1
            self._last = f"{v.kind.value} {name}"
            total = v.timings_ms.get("total")
            if total is not None:
                self._latencies.append(total)

    def line(self, queue_depth: int) -> str:
        """One line for systemd's STATUS=."""
        with self._lock:
            c = self._counts
            return (f"{self._processed} frames (pass {c['pass']}, fail {c['fail']}, error {c['error']}); "
                    f"queue {queue_depth}; last: {self._last or '-'}")

    def summary(self) -> str:
        with self._lock:
            return f"{self._processed} frames ({', '.join(f'{k} {n}' for k, n in self._counts.items())})"

    def status(self) -> dict:
        """The tally's part of the status file: counts, last verdict, latency p50/p95 (ms)."""
        with self._lock:
            lat = sorted(self._latencies)
            processed, counts, last = self._processed, dict(self._counts), self._last
        p = (lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))], 2)) if lat else (lambda q: None)
        return {"pid": os.getpid(), "started_at": self.started.isoformat(),
                "updated_at": datetime.now(timezone.utc).isoformat(), "frames_processed": processed,
                "counts": counts, "last_verdict": last, "latency_p50_ms": p(0.5), "latency_p95_ms": p(0.95)}


class StallWatch:
    """Frames waiting and none through for ``stall_seconds`` is a stall; said once when it starts
    and once when it ends. Checked by the main thread only."""

    def __init__(self, progress: Progress, stall_seconds: float, metrics):
        self.progress = progress
        self.stall_seconds = stall_seconds
        self.metrics = metrics
        self.stalled = False

    def check(self) -> bool:
        age = self.progress.stalled_for()
        stalled = age >= self.stall_seconds
        if stalled and not self.stalled:
            log.error("stalled: %s; no more WATCHDOG=1 to systemd, which restarts the service",
                      self.progress.stall_text(age))
        elif self.stalled and not stalled:
            log.info("stall over: frames are recorded again")
        self.stalled = stalled
        self.metrics.stalled.set(1 if stalled else 0)
        return stalled

    def text(self) -> Optional[str]:
        return self.progress.stall_text(self.progress.stalled_for()) if self.stalled else None
