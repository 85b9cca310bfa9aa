"""Where the daemon writes its status.json (and `inspector status` reads it)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

STATUS_FILE_NAME = "status.json"


def status_file_path(settings=None, environ: Optional[Mapping[str, str]] = None) -> Path:
    """Where the daemon writes (and this command reads) ``status.json``.

    1. ``$STATE_DIRECTORY`` (set by systemd from StateDirectory=: /var/lib/inspector)
    2. the folder of a SQLite database (``database.url``), which is the state folder in practice
    3. the current directory
    """
    env = os.environ if environ is None else environ
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / STATUS_FILE_NAME
    url = getattr(getattr(settings, "database", None), "url", "") or ""
    if url.startswith("sqlite:///") and url not in ("sqlite:///", "sqlite:///:memory:"):
        return Path(url[len("sqlite:///"):]).parent / STATUS_FILE_NAME
    return Path(STATUS_FILE_NAME)
