"""Which database a read command opens: ``--db URL-or-path`` or ``--config FILE``'s database.url.

Shared by history/show/stats/export/report/prune/db so they all accept the same two options.
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Optional

from inspector.errors import InspectorError

if TYPE_CHECKING:
    from inspector.storage.database import ResultStore


def add_db_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("database (one of these is required)")
    g.add_argument("--db", metavar="URL_OR_PATH",
                   help="database URL (sqlite:///..., postgresql://user@host/db) or a SQLite file path")
    g.add_argument("--config", metavar="FILE", help="YAML config: use its database.url (and shifts/retention)")


def load_config(args: argparse.Namespace):
    """The Settings from --config, or None."""
    if not getattr(args, "config", None):
        return None
    from inspector.settings import load_settings

    return load_settings(args.config)


def resolve_db_url(args: argparse.Namespace, settings=None) -> str:
    from inspector.storage.database import normalise_url  # SQLAlchemy: only once a command runs

    db: Optional[str] = getattr(args, "db", None)
    if db:
        return normalise_url(db)
    if settings is None:
        settings = load_config(args)
    if settings is None:
        raise InspectorError("say which database: --db PATH_OR_URL, or --config FILE (its database.url)")
    return normalise_url(settings.database.url)


def open_store(args: argparse.Namespace, *, read_only: bool = True, settings=None) -> ResultStore:
    """Open and schema-check the database named by --db/--config."""
    from inspector.storage.database import ResultStore

    store = ResultStore(resolve_db_url(args, settings), read_only=read_only)
    try:
        store.ensure_schema()
    except Exception:
        store.close()
        raise
    return store
