"""Schema versions: fresh = models, newer refused, older -> `db upgrade` (with a backup)."""
from __future__ import annotations

import pytest
from sqlalchemy import inspect, text

from inspector.commands import db as db_cmd
from inspector.errors import DatabaseError
from inspector.storage import ResultStore
from inspector.storage.database import make_engine
from inspector.storage.migrations import MIGRATIONS, SCHEMA_VERSION, apply_pending
from inspector.storage.models import Base
from inspector.storage.queries import get_inspection
from tests.db_fixtures import make_verdict, run_command  # fixtures (db_url...) come from conftest's plugin


def _schema(engine):
    insp = inspect(engine)
    out = {}
    for t in sorted(Base.metadata.tables):
        cols = {c["name"]: c["nullable"] for c in insp.get_columns(t)}
        idx = {i["name"]: (tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)}
        out[t] = (cols, idx)
    return out


def test_fresh_schema_matches_the_models(db_url):
    s = ResultStore(db_url)
    s.ensure_schema()
    got = _schema(s.engine)
    for name, table in Base.metadata.tables.items():
        cols, idx = got[name]
        assert cols == {c.name: c.nullable for c in table.columns}, name
        want_idx = {i.name: (tuple(c.name for c in i.columns), bool(i.unique)) for i in table.indexes}
        assert idx == want_idx, name
    assert s.schema_version() == SCHEMA_VERSION
    s.close()


def test_newer_database_is_refused(db_url):
    s = ResultStore(db_url)
    s.ensure_schema()
    with s.engine.begin() as c:
        c.execute(text("INSERT INTO schema_migrations (version, name, applied_at) "
                       "VALUES (:v, 'future', CURRENT_TIMESTAMP)"), {"v": SCHEMA_VERSION + 1})
    with pytest.raises(DatabaseError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        s.ensure_schema()
    ro = ResultStore(db_url, read_only=True)
    with pytest.raises(DatabaseError, match="newer"):
        ro.ensure_schema()
    with pytest.raises(DatabaseError, match="newer"):
        run_command(db_cmd, ["upgrade", "--db", db_url])
    ro.close()
    s.close()


def test_foreign_database_is_refused(tmp_path):
    s = ResultStore(str(tmp_path / "other.db"))
    with s.engine.begin() as c:
        c.execute(text("CREATE TABLE inspections (x INTEGER)"))
    with pytest.raises(DatabaseError, match="not an inspector database"):
        s.ensure_schema()
    s.close()


def _make_v1(url: str) -> None:
    """A database as inspector with only migration 1 wrote it, with one row."""
    engine = make_engine(url)
    apply_pending(engine, target=1)
    with engine.begin() as c:
        c.execute(text("INSERT INTO inspections (frame_key, source, captured_at, recorded_at, verdict, score) "
                       "VALUES ('old', 'cam1', '2024-01-01 00:00:00', '2024-01-01 00:00:01', 'fail', 0.9)"))
        c.execute(text("INSERT INTO defect_regions (inspection_id, x, y, w, h, area, peak_score) "
                       "VALUES (1, 1, 2, 3, 4, 12, 0.9), (1, 5, 5, 1, 1, 1, 0.6)"))
    engine.dispose()


def test_older_database_says_run_db_upgrade_and_upgrade_works(db_url, tmp_path):
    assert len(MIGRATIONS) >= 2
    _make_v1(db_url)
    s = ResultStore(db_url)
    with pytest.raises(DatabaseError, match="older.*inspector db upgrade"):
        s.ensure_schema()
    s.close()
    rc, out = run_command(db_cmd, ["upgrade", "--db", db_url])
    assert rc == 0 and f"1 -> {SCHEMA_VERSION}" in out
    if db_url.startswith("sqlite"):
        backups = list(tmp_path.glob("results.db.bak-*"))
        assert len(backups) == 1 and "backed up" in out
        old = ResultStore(f"sqlite:///{backups[0]}", read_only=True)
        assert old.schema_version() == 1  # the backup is the pre-upgrade database
        old.close()
    s = ResultStore(db_url)
    s.ensure_schema()  # no longer raises
    rec = get_inspection(s, 1)
    assert rec["frame_key"] == "old" and rec["region_count"] == 2 and rec["image_w"] is None
    new_id = s.record(make_verdict(size=(10, 20)), frame_key="new", heatmap_path=None)
    assert get_inspection(s, new_id)["image_h"] == 20
    s.close()
    rc, out = run_command(db_cmd, ["upgrade", "--db", db_url])
    assert rc == 0 and "nothing to do" in out
