"""Writing a file so that readers (and a restart after a crash) see the old content or the new,
never half of it: a temporary file in the same folder, then os.replace."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional


def atomic_write_bytes(path: str | Path, data: bytes, *, prefix: Optional[str] = None, suffix: str = ".tmp",
                       fsync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (folders made as needed). ``prefix``/``suffix`` name
    the temporary file (default ``.NAME.*.tmp``: hidden); ``fsync`` makes it durable before the
    rename (off for files rewritten every few seconds whose loss costs nothing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix if prefix is not None else f".{path.name}.",
                               suffix=suffix)
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
