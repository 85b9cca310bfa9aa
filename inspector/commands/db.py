"""Database maintenance: ``inspector db upgrade`` applies pending schema migrations (backing up
a SQLite file first to ``<db>.bak-<UTC timestamp>``); ``inspector db version`` prints the
database's schema version and this inspector's."""
from __future__ import annotations

import argparse

from inspector.storage.locate import add_db_arguments, resolve_db_url


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("upgrade", "version"))
    add_db_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from inspector.storage.database import ResultStore, display_url  # SQLAlchemy: only once it runs
    from inspector.storage.migrations import SCHEMA_VERSION, upgrade

    url = resolve_db_url(args)
    if args.action == "version":
        store = ResultStore(url, read_only=True)
        try:
            v = store.schema_version()
        finally:
            store.close()
        print(f"{display_url(url)}: schema version {v}; this inspector: {SCHEMA_VERSION}")
        return 0 if v == SCHEMA_VERSION else 1
    rep = upgrade(url)
    if not rep.applied:
        print(f"{display_url(url)}: already at schema version {rep.to_version}; nothing to do")
        return 0
    if rep.backup:
        print(f"backed up to {rep.backup}")
    print(f"{display_url(url)}: schema {rep.from_version} -> {rep.to_version} (applied {', '.join(rep.applied)})")
    return 0
