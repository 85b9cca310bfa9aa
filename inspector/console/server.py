"""Build the console from a config (or a database URL) and serve it with uvicorn: in the
foreground (`inspector serve`) or on a thread of the daemon (`inspector run` with console.listen)."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional

from inspector.console.config import DEFAULT_LISTEN, ConsoleConfig

log = logging.getLogger("inspector.console")


def build_console(db_url: str, config: ConsoleConfig, *, settings=None, status_path: Optional[Path] = None,
                  media_roots=None):
    """The Console state: a read-only store for the pages, a writable one (opened on the first
    review) only when a login is configured."""
    from zoneinfo import ZoneInfo

    from inspector.commands.stats import shifts_from_settings
    from inspector.console.app import Console
    from inspector.console.auth import Auth, load_secret
    from inspector.console.media import MediaRoots
    from inspector.storage.database import ResultStore

    reader = ResultStore(db_url, read_only=True)
    try:
        reader.ensure_schema()
    except Exception:
        reader.close()
        raise
    if media_roots is None and settings is not None:
        out = settings.output
        media_roots = (out.done_dir, out.quarantine_dir, out.heatmap_dir)
    busy = settings.database.busy_timeout_s if settings is not None else 5.0
    return Console(config=config, reader=reader, auth=Auth(config, load_secret(config.secret_file)),
                   media=MediaRoots(media_roots or ()), status_path=status_path,
                   shifts=shifts_from_settings(settings), tz=ZoneInfo(settings.timezone) if settings else None,
                   writer_factory=lambda: ResultStore(db_url, busy_timeout_s=busy))


def _uvicorn_server(app, listen: str):
    import uvicorn

    from inspector.metrics import parse_listen

    host, port = parse_listen(listen or DEFAULT_LISTEN, allow_port_zero=True)
    cfg = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                         proxy_headers=False, server_header=False,
                         # open event streams end with the server instead of holding a shutdown
                         timeout_graceful_shutdown=1)
    return uvicorn.Server(cfg)


def serve_forever(app, listen: str) -> None:
    _uvicorn_server(app, listen).run()


class ConsoleThread:
    """The console on a daemon thread of `inspector run`; ``stop()`` ends it."""

    def __init__(self, app, listen: str):
        self.server = _uvicorn_server(app, listen)
        self.thread = threading.Thread(target=self.server.run, name="console", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
