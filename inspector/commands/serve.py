"""The operator's console: live verdicts, history, one inspection, reviews and yield in a web
page, served over the results database (opened read-only; reviews are written only by a
logged-in user). Binds to 127.0.0.1:8321 unless --listen or console.listen says otherwise.

``--hash-password`` reads a password (twice, not echoed) and prints the hash to put under
console.users in the config.
"""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

from inspector.errors import InspectorError
from inspector.storage.locate import add_db_arguments, load_config, resolve_db_url

log = logging.getLogger("inspector.console")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_arguments(parser)
    parser.add_argument("--listen", metavar="HOST:PORT",
                        help="where to serve (default: console.listen, else 127.0.0.1:8321)")
    parser.add_argument("--status-file", metavar="PATH", help="the daemon's status.json (default as `inspector status`)")
    parser.add_argument("--media", metavar="DIR", action="append", type=Path,
                        help="a folder frames/heatmaps may be served from (default: the config's output folders); "
                             "repeatable")
    parser.add_argument("--hash-password", action="store_true",
                        help="read a password and print its hash for console.users, then exit")


def _hash_password() -> int:
    from inspector.console.auth import hash_password

    if sys.stdin.isatty():
        pw = getpass.getpass("password: ")
        if getpass.getpass("again: ") != pw:
            raise InspectorError("the two passwords differ")
    else:
        pw = sys.stdin.readline().rstrip("\n")
    if len(pw) < 8:
        raise InspectorError("use at least 8 characters")
    print(hash_password(pw))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.hash_password:
        return _hash_password()
    from inspector.console.app import create_app
    from inspector.console.config import DEFAULT_LISTEN, ConsoleConfig
    from inspector.console.server import build_console, serve_forever
    from inspector.metrics import normalised_listen
    from inspector.statusfile import status_file_path

    settings = load_config(args)
    config = settings.console if settings is not None else ConsoleConfig()
    try:
        # "8321" and ":8321" mean loopback, as in the config
        listen = normalised_listen(args.listen) if args.listen else (config.listen or DEFAULT_LISTEN)
    except ValueError as exc:
        raise InspectorError(f"--listen {exc}") from None
    # the daemon's status file: named, or where the daemon of this config writes it; with a bare
    # --db there is no daemon to speak of (no banner) unless systemd's $STATE_DIRECTORY says where
    if args.status_file:
        status = Path(args.status_file)
    elif settings is not None or os.environ.get("STATE_DIRECTORY"):
        status = status_file_path(settings)
    else:
        status = None
    console = build_console(resolve_db_url(args, settings), config, settings=settings, status_path=status,
                            media_roots=args.media)
    log.info("console on http://%s/ (%s)", listen,
             "reviews need a login" if config.login_configured else "read-only: no login configured")
    serve_forever(create_app(console, listen), listen)
    return 0
