"""Writing a file so that readers (and a restart after a crash) see the old content or the new,
never half of it: a temporary file in the same folder, then os.replace.

The temporary file gets the mode a plain ``open()`` would give (0666 less the umask: 0644 under
umask 022), not mkstemp's 0600, so the renamed file is as readable as any other file we write.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional


def current_umask() -> int:
    """The process umask, read without changing it: ``os.umask`` can only be read by setting
    it, which would briefly give other threads' new files the wrong mode."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (or a kernel before 4.7): the set-and-restore read
    os.umask(mask)
    return mask


def mkstemp_like_open(dir: str | Path, prefix: str, suffix: str) -> tuple[int, str]:
    """``tempfile.mkstemp`` (exclusive, unpredictable name), with the mode ``open()`` would
    give a new file instead of 0600."""
    fd, tmp = tempfile.mkstemp(dir=dir, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, tmp


def atomic_write_bytes(path: str | Path, data: bytes, *, prefix: Optional[str] = None, suffix: str = ".tmp",
                       fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (folders made as needed). ``prefix``/``suffix`` name
    the temporary file (default ``.NAME.*.tmp``: hidden); ``fsync`` makes it durable before the
    rename (off for files rewritten every few seconds whose loss costs nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = mkstemp_like_open(path.parent, prefix if prefix is not None else f".{path.name}.", suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
