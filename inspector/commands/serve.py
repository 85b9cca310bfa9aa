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
    from inspector.statusfile import status_file_path

    settings = load_config(args)
    config = settings.console if settings is not None else ConsoleConfig()
    status = Path(args.status_file) if args.status_file else status_file_path(settings)
    console = build_console(resolve_db_url(args, settings), config, settings=settings, status_path=status,
                            media_roots=args.media)
    listen = args.listen or config.listen or DEFAULT_LISTEN
    log.info("console on http://%s/ (%s)", listen,
             "reviews need a login" if config.login_configured else "read-only: no login configured")
    serve_forever(create_app(console), listen)
    return 0
