"""ResultStore: round trip, exactly-once, read-only, transient failures. SQLite and PostgreSQL."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import timezone

import pytest
from sqlalchemy import func, select, text

from inspector.errors import DatabaseError
from inspector.storage import ResultStore, StorageUnavailable
from inspector.storage.models import DefectRegion, Inspection, ModelBundle
from inspector.storage.queries import get_inspection
from tests.db_fixtures import T0, make_verdict  # fixtures (store, db_url...) come from conftest's plugin


def test_record_and_read_back_with_regions(store):
    store.register_bundle("bundle-7", "/srv/bundles/7", {"scorer": {"type": "memory_bank"},
                                                         "thresholds": {"image": 0.42, "pixel": 0.6},
                                                         "created_at": "2024-04-30T10:00:00Z"})
    v = make_verdict(kind="fail", score=0.93, threshold=0.42, at=T0, name="A-17.png", bundle_id="bundle-7",
                     regions=[(5, 6, 7, 8, 40, 0.99), (50, 10, 3, 3, 9, 0.7)], size=(640, 480),
                     timings={"decode": 1.5, "preprocess": 2.0, "inference": 9.0, "scoring": 3.0, "judge": 0.5,
                              "total": 16.0, "queue_wait": 4.0})
    iid = store.record(v, frame_key="A-17.png:1234:99", heatmap_path="/h/A-17.png", stored_path="/done/A-17.png")
    rec = get_inspection(store, iid)
    assert rec["verdict"] == "fail" and rec["score"] == pytest.approx(0.93) and rec["threshold"] == pytest.approx(0.42)
    assert rec["captured_at"] == T0 and rec["captured_at"].tzinfo == timezone.utc
    assert rec["origin_name"] == "A-17.png" and rec["source"] == "cam1"
    assert (rec["image_w"], rec["image_h"]) == (640, 480)
    assert (rec["decode_ms"], rec["inference_ms"], rec["judge_ms"], rec["total_ms"]) == (1.5, 9.0, 0.5, 16.0)
    assert rec["heatmap_path"] == "/h/A-17.png" and rec["stored_path"] == "/done/A-17.png"
    assert rec["bundle_id"] == "bundle-7" and rec["bundle_path"] == "/srv/bundles/7"
    assert rec["region_count"] == 2
    assert [(r["x"], r["y"], r["w"], r["h"], r["area"]) for r in rec["regions"]] == [(5, 6, 7, 8, 40), (50, 10, 3, 3, 9)]
    assert rec["regions"][0]["peak_score"] == pytest.approx(0.99)
    with store.session() as s:
        b = s.get(ModelBundle, "bundle-7")
        assert (b.scorer_type, b.image_threshold, b.pixel_threshold) == ("memory_bank", 0.42, 0.6)


def test_non_utc_capture_time_is_stored_as_utc(store):
    from datetime import timedelta
    from datetime import timezone as tz

    local = T0.astimezone(tz(timedelta(hours=2)))
    iid = store.record(make_verdict(at=local), frame_key=None, heatmap_path=None)
    assert get_inspection(store, iid)["captured_at"] == T0


def test_error_verdict_without_image(store):
    v = make_verdict(kind="error", score=None, threshold=None, size=None, error="not an image: truncated PNG")
    iid = store.record(v, frame_key="bad.png", heatmap_path=None)
    rec = get_inspection(store, iid)
    assert rec["verdict"] == "error" and rec["score"] is None and rec["image_w"] is None
    assert rec["error_reason"] == "not an image: truncated PNG"


def test_frame_key_exactly_once(store):
    first = store.record(make_verdict(kind="fail", score=0.9), frame_key="f1", heatmap_path=None)
    again = store.record(make_verdict(kind="pass", score=0.1), frame_key="f1", heatmap_path=None)
    assert again == first
    assert store.find_by_frame_key("f1") == (first, "fail")
    assert store.find_by_frame_key("nope") is None
    # NULL keys (streams) may repeat
    a = store.record(make_verdict(), frame_key=None, heatmap_path=None)
    b = store.record(make_verdict(), frame_key=None, heatmap_path=None)
    assert a != b
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(Inspection)).scalar() == 3


def test_frame_key_survives_restart(db_url):
    s1 = ResultStore(db_url)
    s1.ensure_schema()
    iid = s1.record(make_verdict(), frame_key="k", heatmap_path=None)
    s1.close()
    s2 = ResultStore(db_url)
    s2.ensure_schema()
    assert s2.record(make_verdict(), frame_key="k", heatmap_path=None) == iid
    s2.close()


def test_set_stored_path_and_unknown_id(store):
    iid = store.record(make_verdict(), frame_key="x", heatmap_path=None)
    store.set_stored_path(iid, "/quarantine/x.png")
    assert get_inspection(store, iid)["stored_path"] == "/quarantine/x.png"
    with pytest.raises(DatabaseError, match="not found"):
        store.set_stored_path(iid + 100, "/x")


def test_register_bundle_is_idempotent(store):
    store.register_bundle("b", "/p1", {"a": 1})
    store.register_bundle("b", "/p1", {"a": 1})
    store.register_bundle("b", "/moved", {"a": 1})
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(ModelBundle)) == 1
        assert s.get(ModelBundle, "b").path == "/moved"


def test_deleting_an_inspection_cascades_to_regions(store):
    iid = store.record(make_verdict(kind="fail", regions=[(1, 1, 2, 2, 4, 0.9)]), frame_key=None, heatmap_path=None)
    with store.engine.begin() as c:
        c.execute(Inspection.__table__.delete().where(Inspection.id == iid))
    with store.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(DefectRegion)).scalar() == 0


def test_read_only_store_refuses_writes(db_url):
    rw = ResultStore(db_url)
    rw.ensure_schema()
    rw.record(make_verdict(), frame_key="k", heatmap_path=None)
    rw.close()
    ro = ResultStore(db_url, read_only=True)
    ro.ensure_schema()
    assert ro.find_by_frame_key("k") is not None
    with pytest.raises(DatabaseError, match="read-only"):
        ro.record(make_verdict(), frame_key="k2", heatmap_path=None)
    # even raw SQL cannot write through a read-only connection
    with pytest.raises(Exception) as exc:
        with ro.engine.begin() as c:
            c.execute(text("DELETE FROM inspections"))
    assert "read" in str(exc.value).lower()
    ro.close()
    again = ResultStore(db_url)
    assert again.find_by_frame_key("k") is not None
    again.close()


def test_read_only_missing_sqlite_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.db"
    with pytest.raises(DatabaseError, match=str(missing)):
        ResultStore(str(missing), read_only=True)
    assert not missing.exists()


def test_read_only_on_empty_database_says_so(tmp_path):
    p = tmp_path / "empty.db"
    sqlite3.connect(p).close()
    ro = ResultStore(str(p), read_only=True)
    with pytest.raises(DatabaseError, match="no inspections yet"):
        ro.ensure_schema()
    ro.close()


def test_sqlite_pragmas(tmp_path):
    s = ResultStore(str(tmp_path / "p.db"))
    s.ensure_schema()
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    s.close()


def test_locked_sqlite_raises_storage_unavailable_then_recovers(tmp_path):
    path = tmp_path / "locked.db"
    s = ResultStore(str(path), busy_timeout_s=0.2)
    s.ensure_schema()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StorageUnavailable, match="locked"):
            s.record(make_verdict(), frame_key="k", heatmap_path=None)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert issubclass(StorageUnavailable, DatabaseError)
    iid = s.record(make_verdict(), frame_key="k", heatmap_path=None)
    assert s.find_by_frame_key("k") == (iid, "pass")
    s.close()


def test_unreachable_postgres_is_storage_unavailable():
    s = ResultStore("postgresql://nobody@127.0.0.1:1/none", busy_timeout_s=1)
    with pytest.raises(StorageUnavailable):
        s.find_by_frame_key("x")
    s.close()


def test_plain_path_means_sqlite(tmp_path):
    s = ResultStore(str(tmp_path / "plain.db"))
    assert s.dialect == "sqlite"
    s.ensure_schema()
    s.close()
    assert (tmp_path / "plain.db").exists()


def test_storage_imports_neither_cv2_nor_torch():
    code = ("import sys; import inspector.storage, inspector.storage.queries, inspector.storage.stats, "
            "inspector.storage.locate, inspector.storage.charts, inspector.retention; "
            "bad = [m for m in ('cv2', 'torch') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
