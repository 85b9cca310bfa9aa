"""FolderSource: a watched inbox folder (watchdog), backlog first.

A file is only read once it is complete:
- names matching ``ignore_patterns`` (temporary names: ``.x``, ``*.tmp``, ``*.part``...) are
  never read, so writers that write-then-rename are handled by the rename event;
- a close-after-write (inotify IN_CLOSE_WRITE) or a rename into the inbox marks a file complete;
- otherwise (no close event on this platform or filesystem) a file counts as complete once its
  size and mtime have not changed for ``stable_seconds``.
A file that then does not decode (cut off, empty) may be a writer pausing mid-file, or closing
and reopening it to append: it is retried, and becomes an ``error`` only once it has stayed
unchanged for ``stable_seconds`` after a failed decode, with no write to it still open (inotify
saw writes but no close-after-write; waited for at most ``OPEN_WRITE_MAX_WAIT``).
Before decoding, the file's key is written to a marker in the state folder and removed after:
a file that kills the process while being decoded (out of memory) is found there at the next
start; on the ``POISON_STRIKES``-th such start it is quarantined without being decoded again,
so one bad file cannot keep the daemon in a crash loop.
A periodic rescan catches anything the event stream missed (inotify queue overflow), so no file
is ever left behind. A file emitted stays "in flight" until the writer calls ``finished(path)``
after committing its row and moving it; it is not emitted twice meanwhile.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from engines.atomicfile import atomic_write_bytes
from inspector.decode import FrameError, IncompleteFrameError, read_image_file
from inspector.instance_lock import INBOX_LOCK_NAME  # the daemon's own lock file, whatever ignore_patterns say
from inspector.names import printable_name
from inspector.settings import FolderSourceConfig
from inspector.sources.base import Emit
from inspector.types import Frame

log = logging.getLogger(__name__)

RESCAN_SECONDS = 2.0
OPEN_WRITE_MAX_WAIT = 60.0  # a write seen without its close (missed inotify event?) is waited for at most this long
# Kills during decoding before a file is quarantined unread. Two, not one: a SIGKILL or power cut
# that happens to land during an ordinary decode must not cost a good part its verdict.
POISON_STRIKES = 2
_RETRY = object()  # _read: not decodable yet, look again later


def frame_key(path: str, st: os.stat_result) -> str:
    """Identity of one file landing in the inbox: stable across daemon restarts (valid UTF-8
    text even for a name that is not, so the database can store it)."""
    return f"{printable_name(os.path.basename(path))}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"


def name_problem(name: str) -> Optional[str]:
    """Why an inbox file name is refused (the error row's reason), or None if it is fine.

    A name with a newline or other control character breaks logs, CSV exports and shell
    scripts downstream; one with '..' or not valid UTF-8 is not something a camera writes.
    Such files are quarantined under a safe name without being read."""
    shown = repr(printable_name(name))
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        what = "a newline" if ("\n" in name or "\r" in name) else "a control character"
        return f"{shown}: file name contains {what}; refused (fix the camera's file naming)"
    if printable_name(name) != name:
        return f"{shown}: file name is not valid UTF-8; refused (fix the camera's file naming)"
    if ".." in name:
        return f"{shown}: file name contains '..' (looks like a path); refused (fix the camera's file naming)"
    return None


class FolderSource:
    def __init__(self, config: FolderSourceConfig, *, max_pixels: int, state_dir: Optional[Path] = None):
        self.config = config
        self.name = config.name
        self.inbox = Path(config.inbox)
        # the inbox as events and listings name it (as configured) and as resolved, computed once
        self._inbox_paths = {os.path.abspath(self.inbox), os.path.realpath(self.inbox)}
        self.max_pixels = max_pixels
        self._pending: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, unchanged since)
        self._closed: set[str] = set()
        self._in_flight: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._observer = None
        self._counts = {"frames_read": 0, "frames_emitted": 0, "errors": 0, "drops": 0, "reconnects": 0}
        self._backlog_done = threading.Event()
        self._backlog: set[str] = set()
        self._recorded: dict[str, str] = {}  # path -> key of a recorded file left in the inbox
        self._wake = threading.Event()
        self._writing: set[str] = set()  # written to (inotify) with no close-after-write since
        self._failed: dict[str, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first failed decode)
        self._marker = (Path(state_dir) / f"decoding-{self.name.replace(os.sep, '_')}.json"
                        if state_dir is not None else None)
        self._suspect = self._load_marker()  # (key, strikes): being decoded when the last run died

    # -------------------------------------------------------------- public
    def start(self, emit: Emit) -> None:
        from watchdog.observers import Observer

        self._emit = emit
        try:
            # inotify: a file renamed in from another folder is then a "moved" event, so it is
            # complete at once; by default watchdog calls it "created" (as if still being
            # written), and a fresh frame moved in waited stable_seconds (0.5 s) for nothing
            self._observer = Observer(generate_full_events=True)
        except TypeError:  # observers of other platforms have no such option
            self._observer = Observer()
        self._observer.schedule(_Handler(self), str(self.inbox), recursive=self.config.recursive)
        self._observer.daemon = True
        self._observer.start()
        self._thread = threading.Thread(target=self._loop, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            # watchdog logs a spurious ERROR when its inotify thread is stopped mid-read
            logging.getLogger("watchdog.observers.inotify").setLevel(logging.CRITICAL)
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def finished(self, path: str, recorded_key: Optional[str] = None) -> None:
        """The writer is done with this file: forget it. ``recorded_key``: its row is committed
        but the file stays in the inbox (output.keep_in_inbox, or a failed move); it is not
        taken again while it is the same file (same key), only when replaced."""
        with self._lock:
            self._in_flight.discard(path)
            self._pending.pop(path, None)
            self._closed.discard(path)
            self._backlog.discard(path)
            self._writing.discard(path)
            self._failed.pop(path, None)
            if recorded_key is not None:
                self._recorded[path] = recorded_key

    def wait_backlog(self, timeout: float) -> bool:
        """True once the files present at start have been listed (queued for reading, oldest first)."""
        return self._backlog_done.wait(timeout)

    def stats(self) -> dict:
        with self._lock:
            return {**self._counts, "in_flight": len(self._in_flight), "pending": len(self._pending),
                    "state": "watching" if self._thread and self._thread.is_alive() else "stopped"}

    # -------------------------------------------------------------- events
    def ignored(self, path: str) -> bool:
        name = os.path.basename(path)
        if name == INBOX_LOCK_NAME or any(fnmatch.fnmatch(name, pat) for pat in self.config.ignore_patterns):
            return True
        return not self.config.recursive and os.path.dirname(os.path.abspath(path)) not in self._inbox_paths

    def note(self, path: str, complete: bool, writing: bool = False) -> None:
        """Called from watchdog's thread: a file appeared, changed (``writing``), closed or was
        renamed in (``complete``); and by the rescan."""
        if not complete and (path in self._pending or path in self._in_flight):
            if writing:
                with self._lock:
                    self._writing.add(path)
            return  # known already (a rescan); skip the pattern checks
        if self.ignored(path):
            return
        with self._lock:
            if complete:
                self._writing.discard(path)
            elif writing:
                self._writing.add(path)
            if path in self._in_flight:
                return
            if complete:
                self._closed.add(path)
            self._pending.setdefault(path, (-1, -1, time.monotonic()))
        self._wake.set()  # look now, not at the next poll: it may be complete already

    # -------------------------------------------------------------- loop
    def _scan(self) -> None:
        """Add every candidate file in the inbox (backlog at start, missed or late events later)."""
        try:
            if self.config.recursive:
                paths = [str(p) for p in self.inbox.rglob("*") if not p.is_dir() or p.is_symlink()]
            else:
                with os.scandir(self.inbox) as it:
                    paths = [e.path for e in it if not e.is_dir(follow_symlinks=False)]
        except OSError as exc:
            log.error("source %s: cannot list inbox %s (%s); will retry", self.name, self.inbox, exc.strerror)
            return
        with self._lock:  # recorded files that have left the inbox since
            for gone in self._recorded.keys() - set(paths):
                del self._recorded[gone]
        for p in paths:
            self.note(p, complete=False)

    def _ready_paths(self) -> list[str]:
        """Pending paths that are complete now, oldest first; updates size-stability state."""
        now = time.monotonic()
        ready: list[tuple[int, str]] = []
        with self._lock:
            items = list(self._pending.items())
        for path, (size, mtime, since) in items:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                with self._lock:
                    self._pending.pop(path, None)
                    self._closed.discard(path)
                    self._writing.discard(path)
                    self._failed.pop(path, None)
                continue
            with self._lock:
                kept = self._recorded.pop(path, None)
                if kept is not None and kept == frame_key(path, st):  # recorded already: leave it be
                    self._recorded[path] = kept
                    self._pending.pop(path, None)
                    self._closed.discard(path)
                    continue
                # (a different key: replaced by a new file of the same name, a new frame)
            if (st.st_size, st.st_mtime_ns) != (size, mtime):
                # changed since we last looked: restart the stability clock
                with self._lock:
                    if path in self._pending:
                        self._pending[path] = (st.st_size, st.st_mtime_ns, now)
                since = now
                age = time.time() - st.st_mtime  # backlog files, untouched for a while, are complete
                if age < self.config.stable_seconds and path not in self._closed:
                    continue
            elif now - since < self.config.stable_seconds and path not in self._closed:
                continue
            ready.append((st.st_mtime_ns, path))
        ready.sort()
        return [p for _, p in ready]

    def _loop(self) -> None:
        self._scan()
        with self._lock:
            self._backlog = set(self._pending)  # only these can have a row from an earlier run
        # The backlog is known and queued in order: the daemon may report READY now. Waiting
        # until every backlog frame was handed on would hold READY for as long as a big backlog
        # takes to inspect, and systemd would kill the service at TimeoutStartSec.
        self._backlog_done.set()
        last_scan = time.monotonic()
        scan_every = 0.25
        while not self._stop.is_set():
            for path in self._ready_paths():
                if self._stop.is_set():
                    return
                self._take(path)
            if time.monotonic() - last_scan > scan_every:
                t0 = time.monotonic()
                self._scan()
                last_scan = time.monotonic()
                # The rescan is the safety net for missed events (inotify queue overflow, network
                # shares). Keep its cost near 2% of a core: a small inbox is listed every 0.25 s,
                # a big backlog less often.
                scan_every = min(RESCAN_SECONDS, max(0.25, 50 * (last_scan - t0)))
            # sleep until a close/rename event, or 20 ms to re-check files still being written
            self._wake.wait(0.02)
            self._wake.clear()

    def _take(self, path: str) -> None:
        with self._lock:
            if path in self._in_flight or path not in self._pending:
                return
            self._in_flight.add(path)
            self._pending.pop(path, None)
            self._closed.discard(path)
        frame = self._read(path)
        if frame is _RETRY:  # back to pending: the stability clock starts again now
            with self._lock:
                self._in_flight.discard(path)
                size, mtime, _ = self._failed[path]
                self._pending[path] = (size, mtime, time.monotonic())
            return
        if frame is None:
            self.finished(path)
            return
        while not self._stop.is_set():
            if self._emit(frame):
                with self._lock:
                    self._counts["frames_emitted"] += 1
                return
            self._stop.wait(0.01)  # folder sources never drop: wait for room
        # stopping with a frame in hand: it stays in the inbox for the next start
        self.finished(path)

    def _read(self, path: str):
        """The frame (image or error), None if the file vanished, or _RETRY."""
        t0 = time.perf_counter()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None  # vanished (someone else took it): nothing to record
        key = frame_key(path, st)
        image, error = None, name_problem(os.path.basename(path))
        strikes = self._suspect[1] if self._suspect and self._suspect[0] == key else 0
        if error is None and strikes >= POISON_STRIKES:
            error = (f"{printable_name(os.path.basename(path))}: killed the daemon while decoding, {strikes} times "
                     f"(out of memory?); quarantined without decoding it again")
        elif error is None:
            self._write_marker(key, strikes + 1)
            try:
                image = read_image_file(path, max_pixels=self.max_pixels)
            except IncompleteFrameError as exc:
                if self._retry_later(path):
                    return _RETRY
                error = str(exc)
            except FrameError as exc:
                error = str(exc)
            except MemoryError:
                error = f"{os.path.basename(path)}: too large to decode in memory"
            finally:
                self._clear_marker(key)
        with self._lock:
            self._failed.pop(path, None)
        with self._lock:
            self._counts["frames_read"] += 1
            if error:
                self._counts["errors"] += 1
        captured = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
        return Frame(id=uuid.uuid4().hex, source=self.name, captured_at=captured, image=image, origin_path=path,
                     key=key, error=error, decode_ms=(time.perf_counter() - t0) * 1000.0,
                     from_backlog=path in self._backlog)


    def _retry_later(self, path: str) -> bool:
        """A decode failed: is the file perhaps still being written? (Then it is retried.)"""
        now = time.monotonic()
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        with self._lock:
            first = self._failed.get(path)
            if first is None or first[:2] != (st.st_size, st.st_mtime_ns):  # new content since: look again
                self._failed[path] = (st.st_size, st.st_mtime_ns, now)
                return True
            if now - first[2] < self.config.stable_seconds:
                return True
            # unchanged for stable_seconds after a failed decode: an error, unless a write is open
            return path in self._writing and now - first[2] < OPEN_WRITE_MAX_WAIT

    # ---------------------------------------------- the "decoding now" marker (poison pill)
    def _load_marker(self) -> Optional[tuple[str, int]]:
        if self._marker is None:
            return None
        try:
            data = json.loads(self._marker.read_text("utf-8"))
            suspect = (str(data["key"]), int(data["strikes"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("source %s: unreadable decode marker %s; ignored", self.name, self._marker)
            return None
        log.warning("source %s: the last run ended while decoding %s (%d time(s)); %s", self.name,
                    suspect[0].split("|")[0], suspect[1],
                    "it will be quarantined" if suspect[1] >= POISON_STRIKES else "it is tried once more")
        return suspect

    def _write_marker(self, key: str, strikes: int) -> None:
        if self._marker is None:
            return
        try:
            # no fsync: it only has to outlive this process (an OOM kill), not the machine
            atomic_write_bytes(self._marker, json.dumps({"key": key, "strikes": strikes}).encode("utf-8"),
                               fsync=False)
        except OSError as exc:
            log.warning("source %s: cannot write decode marker %s (%s); a file that crashes the decoder "
                        "would be decoded again at every start", self.name, self._marker, exc.strerror)
            self._marker = None

    def _clear_marker(self, key: str) -> None:
        if self._suspect and self._suspect[0] == key:
            self._suspect = None  # it decoded (or failed cleanly) this time: not a killer
        if self._marker is not None:
            try:
                self._marker.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("source %s: cannot remove decode marker %s (%s)", self.name, self._marker, exc.strerror)


class _Handler:
    """watchdog event handler (duck-typed dispatch, so watchdog is imported only in start())."""

    def __init__(self, source: FolderSource):
        self.source = source

    def dispatch(self, event) -> None:
        if event.is_directory:
            return
        kind = event.event_type
        if kind == "moved":
            if event.dest_path:  # "" when a file was renamed out of the inbox
                self.source.note(os.fsdecode(event.dest_path), complete=True)
        elif kind == "closed":
            self.source.note(os.fsdecode(event.src_path), complete=True)
        elif kind in ("created", "modified"):
            self.source.note(os.fsdecode(event.src_path), complete=False, writing=True)
