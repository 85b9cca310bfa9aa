"""The outbox: one event per recorded verdict, in the verdict's transaction; cursors; pruning.
On SQLite and on a real PostgreSQL (db_url)."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select, text

from inspector.storage.models import Inspection, OutboxEvent
from inspector.storage.outbox import OutboxReader, OutboxWriter
from tests.db_fixtures import make_verdict


def _record(store, n, source="cam1", start=0, kinds=("pass", "fail")):
    items = [(make_verdict(kind=kinds[i % len(kinds)], source=source, name=f"p{i}.png", score=0.1 * (i % 10),
                           regions=((1, 2, 3, 4, 12, 0.9),) if i % 2 else ()), f"{source}-{i}", None, None)
             for i in range(start, start + n)]
    return store.record_many(items)


def _count(store, model) -> int:
    with store.engine.connect() as c:
        return int(c.execute(select(func.count()).select_from(model)).scalar())


def test_events_are_written_with_their_verdicts_numbered_per_source(store):
    _record(store, 2)  # before the outbox is on: no events
    assert _count(store, OutboxEvent) == 0
    woken = []
    store.outbox = OutboxWriter()
    store.outbox.add_listener(woken.append)
    ids = _record(store, 3, start=2)
    _record(store, 2, source="cam2")
    _record(store, 1, start=5)
    reader = OutboxReader(store)
    events = reader.read_after(0, 100)
    assert [(e.source, e.seq) for e in events] == [("cam1", 1), ("cam1", 2), ("cam1", 3), ("cam2", 1), ("cam2", 2),
                                                   ("cam1", 4)]
    assert woken == [events[2].id, events[4].id, events[5].id]  # once per commit, after it
    first = events[0].data
    assert first["inspection_id"] == ids[0] and first["event_id"] == events[0].event_id
    assert first["verdict"] == "pass" and first["frame_key"] == "cam1-2" and first["origin_name"] == "p2.png"
    assert first["regions"] == [] and events[1].data["verdict"] == "fail"
    assert events[1].data["regions"] == [{"x": 1, "y": 2, "w": 3, "h": 4, "area": 12, "peak_score": 0.9}]
    assert first["timings_ms"] == {"total": 12.5, "inference": 8.0} and first["threshold"] == 0.5
    assert events[5].data["counts"] == {"pass": 2, "fail": 2, "error": 0}  # counts of events since the outbox
    assert json.loads(events[1].body) == events[1].data
    assert len({e.event_id for e in events}) == 6


def test_a_frame_recorded_twice_has_one_event(store):
    store.outbox = OutboxWriter()
    _record(store, 2)
    _record(store, 3)  # cam1-0 and cam1-1 again (a restart), plus cam1-2
    events = OutboxReader(store).read_after(0, 100)
    assert [e.data["frame_key"] for e in events] == ["cam1-0", "cam1-1", "cam1-2"]
    assert [e.seq for e in events] == [1, 2, 3]


def test_a_failed_transaction_writes_neither_verdict_nor_event(store):
    store.outbox = OutboxWriter()
    _record(store, 1)
    bad = make_verdict(name="x.png")
    object.__setattr__(bad, "regions", ("not a region",))  # makes the row building fail inside record_many
    with pytest.raises(Exception):
        store.record_many([(bad, "bad", None, None)])
    assert _count(store, Inspection) == 1 and _count(store, OutboxEvent) == 1
    _record(store, 1, start=1)
    assert [e.seq for e in OutboxReader(store).read_after(0, 10)] == [1, 2]  # no gap in the sequence


def test_cursors_prune_and_latest_per_source(store):
    store.outbox = OutboxWriter()
    _record(store, 4)
    _record(store, 2, source="cam2")
    reader = OutboxReader(store)
    events = reader.read_after(0, 100)
    reader.set_cursor("a", events[1].id)
    reader.set_cursor("a", events[2].id)
    reader.set_cursor("b", 0)
    assert reader.cursors() == {"a": events[2].id, "b": 0}
    reader.drop_cursors(["b"])
    assert reader.cursors() == {"a": events[2].id}
    assert [e.id for e in reader.read_after(events[2].id, 2)] == [events[3].id, events[4].id]
    assert [(e.source, e.seq) for e in reader.latest_per_source(events[4].id)] == [("cam1", 4), ("cam2", 1)]
    # everything delivered: all but each source's newest go
    assert reader.prune(events[-1].id) == 4
    assert [(e.source, e.seq) for e in reader.read_after(0, 10)] == [("cam1", 4), ("cam2", 2)]
    assert reader.max_id() == events[-1].id
    _record(store, 1, start=4)  # numbering goes on after a prune
    assert reader.read_after(events[-1].id, 10)[0].seq == 5


def test_commit_times_are_remembered_for_latency():
    w = OutboxWriter()
    w.committed(1, 3)
    w.committed(4, 4)
    assert w.commit_time(2) is not None and w.commit_time(4) >= w.commit_time(3)
    assert w.commit_time(5) is None
    w2 = OutboxWriter()
    w2.committed(10, 12)
    assert w2.commit_time(9) is None  # an event from before this process


def test_migration_3_upgrades_a_version_2_database(db_url):
    from inspector.storage.database import make_engine
    from inspector.storage.migrations import SCHEMA_VERSION, apply_pending

    engine = make_engine(db_url)
    apply_pending(engine, target=2)
    assert [m.version for m in apply_pending(engine, target=3)] == [3] and SCHEMA_VERSION >= 3
    with engine.connect() as c:
        assert c.execute(text("SELECT count(*) FROM outbox_events")).scalar() == 0
    engine.dispose()
