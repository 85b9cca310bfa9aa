"""Helpers for tests that run the real daemon process (``python -m inspector run --config C``).

- :func:`make_workspace`: a temp folder with a config (the session's small bundle, a SQLite
  file, an inbox and the three output folders), returned as a :class:`Workspace`.
- :class:`Daemon`: start / SIGTERM / SIGKILL the daemon, its log in a file, wait for a log line.
- :func:`rows`: the ``inspections`` table read through a read-only sqlite3 connection, so a test
  never takes a write lock on the daemon's database.
- :func:`drop_image`: write an image under a temporary name and ``os.replace`` it into the inbox,
  as a camera should.
- :func:`hold_write_lock`: a second connection holding the SQLite write lock, as another writer would.
"""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import cv2
import numpy as np
import yaml

from inspector.instance_lock import INBOX_LOCK_NAME
from tests.conftest import daemon_env

INSPECTION_COLUMNS = ("id", "frame_key", "origin_name", "verdict", "score", "threshold", "error_reason",
                      "stored_path", "heatmap_path", "inference_ms", "total_ms", "recorded_at", "captured_at")


@dataclass
class Workspace:
    root: Path
    config: Path
    inbox: Path
    db: Path
    done: Path
    quarantine: Path
    heatmaps: Path
    settings: dict = field(default_factory=dict)  # the config as written to ``config``

    def inbox_files(self) -> list[str]:
        """What is in the inbox, but the daemon's own lock file."""
        return sorted(n for n in os.listdir(self.inbox) if n != INBOX_LOCK_NAME)

    def output_files(self) -> list[Path]:
        """Every frame file in done/ and quarantine/ (symlinks included, not followed)."""
        out = []
        for top in (self.done, self.quarantine):
            for dirpath, _dirs, files in os.walk(top):
                out.extend(Path(dirpath) / f for f in files)
        return out


def make_workspace(root: Path, bundle: Path, *, engine: Optional[dict] = None, runtime: Optional[dict] = None,
                   database: Optional[dict] = None, source: Optional[dict] = None, output: Optional[dict] = None,
                   extra: Optional[dict] = None) -> Workspace:
    """Write ``root/inspector.yaml`` for an inbox under ``root`` and the given bundle."""
    root.mkdir(parents=True, exist_ok=True)
    inbox = root / "inbox"
    inbox.mkdir(exist_ok=True)
    db = root / "inspector.db"
    data: dict = {
        "bundle": str(bundle),
        "database": {"url": f"sqlite:///{db}", **(database or {})},
        "sources": [{"type": "folder", "name": "cam", "inbox": str(inbox), "stable_seconds": 0.3, **(source or {})}],
        "output": {"done_dir": str(root / "done"), "quarantine_dir": str(root / "quarantine"),
                   "heatmap_dir": str(root / "heatmaps"), "layout": "per_verdict", **(output or {})},
        # 2 CPU cores shared with the test process (which writes images) and other jobs
        "engine": {"max_batch": 4, "threads": 1, **(engine or {})},  # the default engine
        "runtime": {"queue_size": 8, **(runtime or {})},  # defaults otherwise (batch_wait_ms 0)
    }
    data.update(extra or {})
    config = root / "inspector.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return Workspace(root=root, config=config, inbox=inbox, db=db, done=root / "done",
                     quarantine=root / "quarantine", heatmaps=root / "heatmaps", settings=data)


def encode(image: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok, f"cv2 cannot encode {ext}"
    return buf.tobytes()


def drop_bytes(inbox: Path, name: str, data: bytes) -> Path:
    """Write under a hidden temporary name (ignored by the daemon), then rename into the inbox."""
    tmp = inbox / f".{name.replace(os.sep, '_')}.{os.getpid()}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    dest = inbox / name
    os.replace(tmp, dest)
    return dest


def drop_image(inbox: Path, name: str, image: np.ndarray) -> Path:
    return drop_bytes(inbox, name, encode(image, os.path.splitext(name)[1] or ".png"))


class Daemon:
    """The real daemon in a subprocess; stdout+stderr go to ``log`` (appended across restarts)."""

    def __init__(self, ws: Workspace, *, env: Optional[dict] = None, log: Optional[Path] = None):
        self.ws = ws
        self.env = env if env is not None else daemon_env()
        self.log = log or ws.root / "daemon.log"
        self.proc: Optional[subprocess.Popen] = None
        self._log_offset = 0

    def start(self) -> "Daemon":
        assert self.proc is None or self.proc.poll() is not None, "daemon already running"
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen([sys.executable, "-m", "inspector", "run", "--config", str(self.ws.config)],
                                         stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                         cwd=str(self.ws.root))
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self, since_start: bool = True) -> str:
        if not self.log.exists():
            return ""
        data = self.log.read_bytes()
        return data[self._log_offset if since_start else 0:].decode("utf-8", "replace")

    def wait_log(self, needle: str, timeout: float = 60.0) -> None:
        """Wait until this run's log contains ``needle`` (fails early if the daemon exits)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log_text():
                return
            if not self.alive():
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before logging {needle!r}:\n"
                                     + self.tail())
            time.sleep(0.05)
        raise AssertionError(f"daemon did not log {needle!r} within {timeout} s:\n" + self.tail())

    def wait_ready(self, timeout: float = 60.0) -> "Daemon":
        self.wait_log("inspector.service: ready:", timeout)
        return self

    def kill(self) -> int:
        """SIGKILL: no handler runs, no queue drains; the harshest crash there is."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        """Best-effort cleanup for finally-blocks."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text(since_start=False).splitlines()[-n:])


def connect_ro(db: Path) -> sqlite3.Connection:
    """A read-only connection: it can never write or hold a write lock on the daemon's database."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10.0)


def rows(db: Path) -> list[dict]:
    if not db.exists():
        return []
    con = connect_ro(db)
    try:
        cur = con.execute(f"SELECT {', '.join(INSPECTION_COLUMNS)} FROM inspections ORDER BY id")
        return [dict(zip(INSPECTION_COLUMNS, r)) for r in cur.fetchall()]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    finally:
        con.close()


@contextmanager
def hold_write_lock(db: Path) -> Iterator[sqlite3.Connection]:
    """Hold the SQLite write lock (BEGIN IMMEDIATE on a second connection, as another writer such as
    a backup or ``inspector prune`` would) until the block ends, then roll back and close."""
    locker = sqlite3.connect(str(db), timeout=5.0, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        yield locker
    finally:
        locker.execute("ROLLBACK")
        locker.close()


def row_count(db: Path) -> int:
    if not db.exists():
        return 0
    con = connect_ro(db)
    try:
        return int(con.execute("SELECT count(*) FROM inspections").fetchone()[0])
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        con.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, daemon: Optional[Daemon] = None,
             interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"daemon exited ({daemon.proc.returncode}) while waiting for {what}:\n"
                                 + daemon.tail())
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}"
                         + (f"\n{daemon.tail()}" if daemon is not None else ""))


def wait_rows(ws: Workspace, n: int, timeout: float = 60.0, daemon: Optional[Daemon] = None) -> list[dict]:
    wait_for(lambda: row_count(ws.db) >= n, timeout, f"{n} rows in {ws.db}", daemon)
    return rows(ws.db)


def wait_row_named(ws: Workspace, name: str, timeout: float = 30.0, daemon: Optional[Daemon] = None) -> list[dict]:
    """Wait until a row whose origin_name is ``name`` is recorded; returns every row of that name."""
    wait_for(lambda: any(r["origin_name"] == name for r in rows(ws.db)), timeout, f"a row for {name!r}", daemon)
    return [r for r in rows(ws.db) if r["origin_name"] == name]


def wait_inbox_empty(ws: Workspace, timeout: float = 60.0, daemon: Optional[Daemon] = None) -> None:
    wait_for(lambda: not [n for n in ws.inbox_files() if not n.startswith(".")], timeout,
             f"inbox {ws.inbox} to empty", daemon)


def heatmap_problems(ws: Workspace) -> list[str]:
    """Heatmap PNGs that do not decode, and temporary files left behind under heatmaps/."""
    bad = []
    for dirpath, _dirs, files in os.walk(ws.heatmaps):
        for f in files:
            p = os.path.join(dirpath, f)
            if f.startswith(".tmp-"):
                bad.append(f"leftover temporary file {p}")
            elif cv2.imread(p, cv2.IMREAD_COLOR) is None:
                bad.append(f"heatmap {p} does not decode")
    return bad


# ---------------------------------------------------------------- filesystems root cannot write to
# Tests run as root in CI, and root ignores permission bits (chmod, os.access): a folder that root
# cannot write to must be a real read-only or full filesystem. These mount one (root with
# CAP_SYS_ADMIN, as in CI's container); where mounting is not allowed the test is skipped, saying so.
def _mount(args: list[str]) -> None:
    import pytest

    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"needs permission to mount (root with CAP_SYS_ADMIN): mount {' '.join(args)}: "
                    f"{proc.stderr.strip()}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], check=True, capture_output=True)


@contextmanager
def small_tmpfs(path: Path, size: str = "1M") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (created if missing): another filesystem than the
    inbox, and one that fills up quickly."""
    path.mkdir(parents=True, exist_ok=True)
    _mount(["-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)])
    try:
        yield path
    finally:
        _umount(path)


@contextmanager
def read_only_mount(path: Path) -> Iterator[Path]:
    """``path`` (a folder) bind-mounted read-only onto itself: EROFS for every writer, root too."""
    _mount(["--bind", str(path), str(path)])
    try:
        _mount(["-o", "remount,bind,ro", str(path)])
        yield path
    finally:
        _umount(path)


def fill_up(folder: Path) -> Path:
    """Write a file into ``folder`` until its filesystem is full; returns it (delete it to free the space)."""
    filler = folder / "filler.bin"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(chunk)
        except OSError as exc:
            if exc.errno != 28:  # ENOSPC
                raise
    return filler


@contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """``chattr +i``: the file cannot be written, not even by root (it stays readable), e.g. a
    database file that opens and reads but refuses every write."""
    import pytest

    proc = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"needs chattr +i (root with CAP_LINUX_IMMUTABLE, a filesystem that has the flag): "
                    f"{proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)
