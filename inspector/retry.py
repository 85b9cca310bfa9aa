"""The writer's retry policy: a locked database, a full disk or an unwritable output folder is
waited out (backoff up to 5 s, logged once when it starts and once when it clears), never a
frame lost; once the daemon is stopping, retries give up 10 s after the stop."""
from __future__ import annotations

import errno
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable, Optional

from inspector.errors import InspectorError
from inspector.service_health import Heartbeat, Progress
from inspector.storage import StorageUnavailable

log = logging.getLogger("inspector.service")

# errors of output files that can clear while we wait (space freed, remount, permissions or a
# folder fixed): retried, once-per-incident logging; anything else is a per-frame error
RETRYABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.ENOTDIR)
GIVE_UP_AFTER_STOP_S = 10.0


class Incident:
    """A recurring problem, logged once when it starts and once when it clears, not per frame or
    per retry; keeps the last error, when it happened and the failures so far (status, metrics).
    Used by the writer's retries and by each line sink's worker; hit from more than one thread
    (the database: the inference worker's look-ups, the writer)."""

    def __init__(self, what: str, progress: Optional[Progress] = None, *,
                 consequence: str = "frames stay in the inbox and are retried",
                 logger: logging.Logger = log,
                 expected: tuple[type[BaseException], ...] = (InspectorError, OSError, TimeoutError)):
        self.what = what
        self.progress = progress
        self.consequence = consequence
        self.log = logger
        self.expected = expected
        self._lock = threading.Lock()
        self.since: Optional[float] = None  # monotonic start of the incident under way, else None
        self.last_error: Optional[str] = None
        self.last_error_at: Optional[str] = None  # UTC ISO time of the last failure
        self.count = 0  # failures so far, across incidents

    def hit(self, detail: str, exc: Optional[BaseException] = None) -> None:
        """One failure. ``exc`` of a type nobody expects (not an InspectorError or OSError) is a
        bug somewhere: its traceback is logged once, with the incident's first line (an error of
        ``expected`` types is one line)."""
        if self.progress is not None:
            self.progress.set_error(f"{self.what}: {detail}")
        with self._lock:
            self.last_error = detail
            self.last_error_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            self.count += 1
            starts = self.since is None
            if starts:
                self.since = time.monotonic()
        if starts:
            unexpected = exc is not None and not isinstance(exc, self.expected)
            self.log.error("%s: %s; %s", self.what, detail, self.consequence,
                           exc_info=exc if unexpected else None)

    def clear(self, note: str = "") -> None:
        with self._lock:
            since, self.since = self.since, None
        if since is not None:
            self.log.info("%s: recovered after %.1fs%s", self.what, time.monotonic() - since, note)


class RetryPolicy:
    """Used by the writer thread only."""

    def __init__(self, stop_event: threading.Event, heartbeat: Heartbeat):
        self.stop_event = stop_event
        self.heartbeat = heartbeat
        self._give_up_at: Optional[float] = None  # stopping: when retries give up (one deadline for all frames)

    def run(self, action: Callable, incident: Incident):
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
                if exc.errno not in RETRYABLE_ERRNOS:
                    raise
                incident.hit(f"{exc.strerror} ({getattr(exc, 'filename', '')})")
            if self.stop_event.is_set():
                self._give_up_at = self._give_up_at or time.monotonic() + GIVE_UP_AFTER_STOP_S
                if time.monotonic() > self._give_up_at:
                    return False
            # Waiting out a known incident is not a hang: keep the systemd watchdog fed (a restart
            # would not unlock the database or free the disk, only repeat the start-up), until it
            # lasts stall_seconds: then the service stops the pings (StallWatch).
            end = time.monotonic() + delay
            while (left := end - time.monotonic()) > 0:
                self.heartbeat.beat()
                time.sleep(min(left, 1.0))
            self.heartbeat.beat()
            delay = min(delay * 2, 5.0)
