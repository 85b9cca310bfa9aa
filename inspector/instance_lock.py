"""One daemon per inbox and per SQLite database.

Two daemons on one inbox both take every frame (each counted twice); two on one SQLite file fight
over its write lock. So ``inspector run`` holds an exclusive ``flock`` on a lock file for each:
``<inbox>/.inspector.lock`` and ``<database>.lock`` next to the SQLite file. The file holds the
holder's PID, so a second daemon can say whom it found. The kernel drops a flock when its process
ends, however it ends (SIGKILL included), so a stale lock file never blocks a restart.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Optional

from inspector.errors import InspectorError

INBOX_LOCK_NAME = ".inspector.lock"  # a dotfile: the folder source never takes it for a frame


class AlreadyRunning(InspectorError):
    """Another inspector process holds the lock."""


class InstanceLock:
    """An exclusive flock held until :meth:`close` or the end of the process."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: Optional[int] = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (removing it would race a newcomer)
            self._fd = None


def lock_inbox(inbox: Path) -> InstanceLock:
    return _acquire(Path(inbox) / INBOX_LOCK_NAME, f"inbox {inbox}", "watched",
                    "the inbox must be writable by this user")


def lock_database(db_file: Path) -> InstanceLock:
    db_file = Path(db_file)
    return _acquire(db_file.with_name(db_file.name + ".lock"), f"database {db_file}", "used",
                    "the database's folder must be writable by this user")


def _acquire(path: Path, what: str, verb: str, fix: str) -> InstanceLock:
    try:
        # no O_TRUNC: the file may be the holder's, with its PID in it
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise InspectorError(f"{what}: cannot open its lock file {path} ({exc.strerror}); {fix}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise AlreadyRunning(f"{what} is already {verb} by inspector PID {holder or '(unknown)'} "
                                 f"(lock file {path}); stop that daemon first, one daemon per inbox and database"
                                 ) from None
        raise InspectorError(f"{what}: cannot lock {path} ({exc.strerror})") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return InstanceLock(path, fd)


def _read_pid(fd: int) -> Optional[int]:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None  # empty: the holder has the lock but has not written yet
    except (OSError, ValueError):
        return None
