"""The per-hour verdict counts (yield_hours): kept by the writer, backfilled by migration 5, and
the yield page's counts read from them equal counting the rows."""
from __future__ import annotations

import random
from datetime import timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import insert, select, text

from inspector.console.queries import source_counts
from inspector.settings import RetentionConfig
from inspector.storage import ResultStore
from inspector.storage.migrations import apply_pending
from inspector.storage.models import Inspection, YieldHour
from inspector.storage.queries import HistoryFilter
from inspector.storage.stats import TOTAL_KEY, compute_stats
from tests.db_fixtures import T0, make_verdict


def _stream(store, n=300, seed=0):
    """n verdicts over ~10 h, 3 sources, recorded singly and in groups (the daemon's group
    commit), with a repeated frame key that must not count twice."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        kind = rng.choices(["pass", "fail", "error"], [0.8, 0.15, 0.05])[0]
        v = make_verdict(kind=kind, score=None if kind == "error" else rng.random(),
                         source=f"cam{rng.randint(1, 3)}", at=T0 + timedelta(seconds=rng.randint(0, 36000)),
                         name=f"p{i}.png")
        items.append((v, f"key-{i}", None, None))
    i = 0
    while i < len(items):
        k = rng.randint(1, 7)
        store.record_many(items[i:i + k])
        i += k
    store.record(items[5][0], frame_key="key-5", heatmap_path=None)  # a duplicate: nothing new
    store.record_many([items[7], items[8]])  # duplicates in a group: the per-row fallback


def _rollup(conn):
    return {(h.replace(tzinfo=None), s, v): int(c) for h, s, v, c in
            conn.execute(select(YieldHour.hour, YieldHour.source, YieldHour.verdict, YieldHour.count))}


def _from_rows(conn):
    out = {}
    for at, s, v in conn.execute(select(Inspection.captured_at, Inspection.source, Inspection.verdict)):
        k = (at.replace(tzinfo=None, minute=0, second=0, microsecond=0), s, v)
        out[k] = out.get(k, 0) + 1
    return out


def test_writer_keeps_the_rollup_equal_to_the_rows(store):
    _stream(store)
    with store.engine.connect() as conn:
        got, want = _rollup(conn), _from_rows(conn)
    assert sum(want.values()) == 300
    assert got == want


def test_migration_backfills_the_rollup(db_url):
    s = ResultStore(db_url)
    apply_pending(s.engine, target=4)
    rng = random.Random(1)
    rows = [dict(source=f"cam{rng.randint(1, 2)}", captured_at=T0 + timedelta(seconds=rng.randint(0, 20000),
                                                                             microseconds=rng.randint(0, 999999)),
                 recorded_at=T0, verdict=rng.choice(["pass", "pass", "fail", "error"]), frame_key=f"k{i}")
            for i in range(200)]
    with s.engine.begin() as conn:
        conn.execute(insert(Inspection.__table__), rows)
        assert conn.execute(text("SELECT MAX(version) FROM schema_migrations")).scalar() == 4
    apply_pending(s.engine)
    with s.engine.connect() as conn:
        got, want = _rollup(conn), _from_rows(conn)
    assert sum(got.values()) == 200 and got == want
    s.ensure_schema()  # at the current version now
    s.close()


def _counts(rows):
    return [(r.key, r.total, r.passed, r.failed, r.errors) for r in rows]


@pytest.mark.parametrize("tz", [timezone.utc, ZoneInfo("Europe/Berlin"), ZoneInfo("Asia/Kolkata")])
def test_yield_counts_from_the_rollup_equal_counting_rows(store, tz):
    _stream(store, n=400, seed=2)
    periods = [HistoryFilter(since=T0 + timedelta(minutes=17), until=T0 + timedelta(hours=7, minutes=23)),
               HistoryFilter(since=T0 + timedelta(minutes=17, seconds=3.5)),
               HistoryFilter(since=T0 + timedelta(hours=2, minutes=5), until=T0 + timedelta(hours=2, minutes=50)),
               HistoryFilter(since=T0 + timedelta(minutes=17), until=T0 + timedelta(hours=7), source="cam2"),
               HistoryFilter(since=T0 + timedelta(minutes=17), until=T0 + timedelta(hours=7), verdict="fail"),
               HistoryFilter()]
    for flt in periods:
        for by in ("hour", "day"):
            fast = compute_stats(store, by, flt, tz=tz, percentiles=False)
            rows = compute_stats(store, by, flt, tz=tz, percentiles=True)  # counts rows
            assert _counts(fast) == _counts(rows), (flt, by)
            assert all(r.p50 is None for r in fast)
        by_source = [r for r in compute_stats(store, "source", flt) if r.key != TOTAL_KEY]
        assert _counts(source_counts(store, flt)) == _counts(by_source), flt


def test_pruning_keeps_the_yield_history(store):
    """Retention deletes rows but not yield_hours: whole hours of a pruned period still count
    (counting rows would now find none); the page's partial edge hours see only the rows left."""
    from inspector.retention import prune

    _stream(store, n=200, seed=3)
    flt = HistoryFilter(since=T0, until=T0 + timedelta(hours=11))
    before = compute_stats(store, "hour", flt, percentiles=False)
    before_src = _counts(source_counts(store, flt))
    prune(store, RetentionConfig(max_age_days=1, keep_newest_fails=0), now=T0 + timedelta(days=3))
    with store.engine.connect() as conn:
        assert conn.execute(select(Inspection.id)).first() is None
    assert _counts(compute_stats(store, "hour", flt, percentiles=False)) == _counts(before)
    assert _counts(source_counts(store, flt)) == before_src
    assert compute_stats(store, "hour", flt, percentiles=True)[-1].total == 0  # the rows are gone


def test_too_many_partial_hours_count_rows_instead(store, monkeypatch):
    """Past MAX_EDGE_PIECES partial hours the rollup gives up and compute_stats counts rows."""
    from inspector.storage import rollup

    _stream(store, n=150, seed=4)
    flt = HistoryFilter(since=T0 + timedelta(minutes=17), until=T0 + timedelta(hours=7, minutes=23))
    want = _counts(compute_stats(store, "hour", flt, tz=ZoneInfo("Asia/Kolkata"), percentiles=True))
    calls = []
    real = rollup.segment_counts
    monkeypatch.setattr(rollup, "segment_counts", lambda *a: calls.append(real(*a)) or calls[-1])
    monkeypatch.setattr(rollup, "MAX_EDGE_PIECES", 0)
    assert _counts(compute_stats(store, "hour", flt, tz=ZoneInfo("Asia/Kolkata"), percentiles=False)) == want
    assert calls == [None]  # it was asked, declined, and the rows were counted
    monkeypatch.setattr(rollup, "MAX_EDGE_PIECES", 64)
    assert _counts(compute_stats(store, "hour", flt, tz=ZoneInfo("Asia/Kolkata"), percentiles=False)) == want
    assert calls[-1] is not None
