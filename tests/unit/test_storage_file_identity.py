"""The SQLite file deleted or replaced under an open ResultStore (issue 11, item 2): the store
tells, so the daemon stops before committing rows to an unlinked inode. And check_writable
(item 10): a database that reads but cannot take a write is told apart at start-up."""
from __future__ import annotations

import os
import sqlite3
import subprocess

import pytest

from inspector.errors import DatabaseError
from inspector.storage import ResultStore, StorageUnavailable


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


def test_check_writable_passes_on_a_writable_database(store):
    """SQLite and PostgreSQL (db_url runs both): the probe write is rolled back, nothing changes."""
    store.check_writable()
    assert store.schema_version() is not None


def test_check_writable_refuses_a_database_that_only_reads(tmp_path):
    """An immutable SQLite file (chattr +i: not even root may write it) opens and reads fine."""
    db = tmp_path / "inspector.db"
    ResultStore(f"sqlite:///{db}").ensure_schema()
    proc = subprocess.run(["chattr", "+i", str(db)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"needs chattr +i (root with CAP_LINUX_IMMUTABLE on a filesystem with the flag): {proc.stderr}")
    store = ResultStore(f"sqlite:///{db}")
    try:
        assert store.schema_version() is not None  # reads work
        with pytest.raises(DatabaseError) as exc:
            store.check_writable()
        assert not isinstance(exc.value, StorageUnavailable) and "readonly" in str(exc.value)
    finally:
        store.close()
        subprocess.run(["chattr", "-i", str(db)], check=True)
