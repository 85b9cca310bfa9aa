"""The writer's retry policy: a locked database, a full disk or an unwritable output folder is
waited out (backoff up to 5 s, logged once when it starts and once when it clears), never a
frame lost; once the daemon is stopping, retries give up 10 s after the stop."""
from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Callable, Optional

from inspector.service_health import Heartbeat, Progress
from inspector.storage import StorageUnavailable

log = logging.getLogger("inspector.service")

# errors of output files that can clear while we wait (space freed, remount, permissions or a
# folder fixed): retried, once-per-incident logging; anything else is a per-frame error
RETRYABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.ENOTDIR)
GIVE_UP_AFTER_STOP_S = 10.0


class Incident:
    """Logs a recurring problem once when it starts and once when it clears, not per frame.
    Hit from more than one thread (the database: the inference worker's look-ups, the writer)."""

    def __init__(self, what: str, progress: Optional[Progress] = None):
        self.what = what
        self.progress = progress
        self._lock = threading.Lock()
        self._since: Optional[float] = None

    def hit(self, detail: str) -> None:
        if self.progress is not None:
            self.progress.set_error(f"{self.what}: {detail}")
        with self._lock:
            starts = self._since is None
            if starts:
                self._since = time.monotonic()
        if starts:
            log.error("%s: %s; frames stay in the inbox and are retried", self.what, detail)

    def clear(self) -> None:
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.info("%s: recovered after %.1fs", self.what, time.monotonic() - since)


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
