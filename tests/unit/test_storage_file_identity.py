"""The SQLite file deleted or replaced under an open ResultStore (issue 11, item 2): the store
tells, so the daemon stops before committing rows to an unlinked inode."""
from __future__ import annotations

import os
import sqlite3

from inspector.storage import ResultStore


def test_deleted_database_file_is_noticed(tmp_path):
    db = tmp_path / "inspector.db"
    store = ResultStore(f"sqlite:///{db}")
    try:
        store.ensure_schema()
        assert store.replaced_file() is None
        for p in tmp_path.glob("inspector.db*"):
            p.unlink()
        assert store.schema_version() is not None  # the open connection still works: the danger
        why = store.replaced_file()
        assert why is not None and str(db) in why and "it is gone" in why
    finally:
        store.close()


def test_replaced_database_file_is_noticed(tmp_path):
    db = tmp_path / "inspector.db"
    store = ResultStore(f"sqlite:///{db}")
    try:
        store.ensure_schema()
        other = tmp_path / "restored.db"
        sqlite3.connect(str(other)).close()
        os.replace(other, db)
        why = store.replaced_file()
        assert why is not None and str(db) in why and "another file" in why
    finally:
        store.close()


def test_in_memory_and_untouched_files_are_fine(tmp_path):
    mem = ResultStore("sqlite://")
    mem.ensure_schema()
    assert mem.replaced_file() is None
    mem.close()
    store = ResultStore(f"sqlite:///{tmp_path / 'x.db'}")
    store.ensure_schema()
    store.close()
    assert store.replaced_file() is None  # nothing deleted: a closed pool is not a replaced file
