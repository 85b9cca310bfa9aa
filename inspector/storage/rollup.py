"""Per-hour verdict counts (``yield_hours``): written with the verdicts, read by the yield page.

Writer: ``add(conn, rows)`` runs inside ResultStore.record_many's transaction, like the outbox
events and sequences, so the counts and the rows commit together or not at all (a SIGKILL never
leaves one without the other). It is an UPSERT (``count = count + excluded.count``) on the
(hour, source, verdict) primary key, on SQLite and PostgreSQL alike.

Readers: a period [since, until) is cut into whole UTC hours, read from ``yield_hours`` (one row
per hour, source and verdict however many frames the hour had), and the partial hours at its
edges, counted from ``inspections`` by range (at most an hour of rows each). Only filters on
source, verdict and time can use the rollup (``usable``); the others count rows as before.

Retention pruning deletes inspection rows but keeps ``yield_hours``: yield history outlives the
frames. So for a period older than the retention, whole hours still count their pruned rows,
while the partial edge hours only see the rows that are left.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Optional

import numpy as np
from sqlalchemy import Connection, func, select
from sqlalchemy.dialects import postgresql, sqlite

from inspector.storage.models import Inspection, YieldHour

if TYPE_CHECKING:  # queries imports the store, which imports this module (the writer's half)
    from inspector.storage.queries import HistoryFilter

_HOUR_US = 3600 * 1_000_000
_EPOCH = datetime(1970, 1, 1)
_VERDICT_CODE = {"pass": 0, "fail": 1, "error": 2}
MAX_EDGE_PIECES = 64  # more partial hours than this (a half-hour time zone): count rows instead


def hour_of(at: datetime) -> datetime:
    """Start of the UTC hour of ``at`` (aware, or naive UTC), naive UTC."""
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    return at.replace(minute=0, second=0, microsecond=0)


def add(conn: Connection, rows: list[dict]) -> None:
    """Add the inspection ``rows`` (column dicts, as inserted) to the per-hour counts."""
    counts: dict[tuple[datetime, str, str], int] = {}
    for r in rows:
        k = (hour_of(r["captured_at"]), r["source"], r["verdict"])
        counts[k] = counts.get(k, 0) + 1
    if not counts:
        return
    # sorted: two writers sharing a source lock the same rows in the same order (no deadlock)
    conn.execute(_upsert(conn.dialect.name), [dict(hour=h, source=s, verdict=v, count=n)
                                              for (h, s, v), n in sorted(counts.items())])


_UPSERTS: dict = {}


def _upsert(dialect_name: str):
    """The UPSERT statement, built once per dialect (building it per frame cost more than running it)."""
    stmt = _UPSERTS.get(dialect_name)
    if stmt is None:
        stmt = (postgresql if dialect_name == "postgresql" else sqlite).insert(YieldHour.__table__)
        stmt = stmt.on_conflict_do_update(index_elements=["hour", "source", "verdict"],
                                          set_={"count": YieldHour.__table__.c.count + stmt.excluded["count"]})
        _UPSERTS[dialect_name] = stmt
    return stmt


def usable(flt: "HistoryFilter") -> bool:
    """Whether the rollup can answer counts under ``flt`` (source, verdict and time only)."""
    return flt.bundle_id is None and flt.min_score is None and flt.region_area_min is None


def _us(dt: datetime) -> int:
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return (dt - _EPOCH) // timedelta(microseconds=1)


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _rollup_where(stmt, flt: "HistoryFilter", h0: Optional[int], h1: Optional[int]):
    """Rows of yield_hours for hours [h0, h1) (hours since the epoch; None: open)."""
    if h0 is not None:
        stmt = stmt.where(YieldHour.hour >= _dt(h0 * _HOUR_US))
    if h1 is not None:
        stmt = stmt.where(YieldHour.hour < _dt(h1 * _HOUR_US))
    if flt.source is not None:
        stmt = stmt.where(YieldHour.source == flt.source)
    if flt.verdict is not None:
        stmt = stmt.where(YieldHour.verdict == flt.verdict)
    return stmt


def period_range(conn: Connection, flt: "HistoryFilter") -> Optional[tuple[int, int]]:
    """(first, last) UTC epoch seconds with counts under ``flt``: the rows' range joined with the
    rollup's hours (which may reach back past pruned rows); None when there is nothing."""
    # two ORDER BY ... LIMIT 1 probes: SQLite reads MIN and MAX together by walking the whole range
    lo = conn.execute(flt.apply(select(Inspection.captured_at)).order_by(Inspection.captured_at).limit(1)).scalar()
    hi = conn.execute(flt.apply(select(Inspection.captured_at)).order_by(Inspection.captured_at.desc())
                      .limit(1)).scalar()
    h0 = None if flt.since is None else _us(flt.since) // _HOUR_US
    h1 = None if flt.until is None else -(-_us(flt.until) // _HOUR_US)
    rlo, rhi = conn.execute(_rollup_where(select(func.min(YieldHour.hour), func.max(YieldHour.hour)),
                                          flt, h0, h1)).one()
    if rlo is not None and flt.since is not None and rlo < flt.since:
        rlo = flt.since  # the first hour is partial: its rows start at since
    firsts = [_us(t) // 1_000_000 for t in (lo, rlo) if t is not None]
    lasts = [_us(t) // 1_000_000 for t in (hi, rhi) if t is not None]
    if not firsts:
        return None
    return min(firsts), max(lasts)


def _plan(flt: "HistoryFilter", cuts_us: list[int]) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    """Split the pieces between consecutive ``cuts_us`` (clipped to the filter's period) into
    whole hours [(piece, h0, h1)] and partial ranges [(piece, lo_us, hi_us)]."""
    since = -(1 << 62) if flt.since is None else _us(flt.since)
    until = 1 << 62 if flt.until is None else _us(flt.until)
    whole, partial = [], []
    for i in range(len(cuts_us) - 1):
        a, b = max(cuts_us[i], since), min(cuts_us[i + 1], until)
        if a >= b:
            continue
        h0, h1 = -(-a // _HOUR_US), b // _HOUR_US
        if h0 < h1:
            whole.append((i, h0, h1))
            if a < h0 * _HOUR_US:
                partial.append((i, a, h0 * _HOUR_US))
            if h1 * _HOUR_US < b:
                partial.append((i, h1 * _HOUR_US, b))
        else:
            partial.append((i, a, b))
    return whole, partial


def segment_counts(conn: Connection, flt: "HistoryFilter", starts_s: np.ndarray, end_s: int) -> Optional[np.ndarray]:
    """[segments, 3] pass/fail/error counts of the time segments ``starts_s`` (UTC epoch seconds,
    the last one ending at ``end_s``) under ``flt``: whole hours from the rollup, the rest from
    rows. None when too many partial hours (the caller counts rows)."""
    cuts = [int(s) * 1_000_000 for s in starts_s.tolist()] + [int(end_s) * 1_000_000]
    whole, partial = _plan(flt, cuts)
    if len(partial) > MAX_EDGE_PIECES:
        return None
    out = np.zeros((len(starts_s), 3), np.int64)
    if whole:
        piece_of: dict[int, int] = {}
        for i, h0, h1 in whole:
            piece_of.update((h, i) for h in range(h0, h1))
        stmt = _rollup_where(select(YieldHour.hour, YieldHour.verdict, func.sum(YieldHour.count)), flt,
                             whole[0][1], whole[-1][2]).group_by(YieldHour.hour, YieldHour.verdict)
        for hour, verdict, n in conn.execute(stmt):
            i = piece_of.get(_us(hour) // _HOUR_US)
            if i is not None:
                out[i, _VERDICT_CODE.get(verdict, 2)] += int(n)
    for i, lo, hi in partial:
        for verdict, n in _row_counts(conn, flt, lo, hi, None):
            out[i, _VERDICT_CODE.get(verdict, 2)] += int(n)
    return out


def time_groups(conn: Connection, by: str, flt: "HistoryFilter", shifts, tz, *, sqlite: bool):
    """compute_stats' counts-only groups per time bucket (a stats._Groups, percentiles nan) from
    segment_counts, in one snapshot; None when there are too many partial hours."""
    from inspector.storage import stats  # stats imports this module

    if sqlite:
        raw = conn.connection.driver_connection
        raw.execute("BEGIN")  # one read transaction for the rollup and the rows
    else:
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    try:
        span = period_range(conn, flt)
        if span is None:
            return stats._no_groups()
        starts, seg_bucket, end = stats._time_segments(by, span[0], span[1], tz, shifts)
        seg_counts = segment_counts(conn, flt, starts, end)
    finally:
        raw.rollback() if sqlite else conn.rollback()
    if seg_counts is None:
        return None
    uniq, dense = np.unique(seg_bucket, return_inverse=True)
    counts = np.zeros((len(uniq), 3), np.int64)
    np.add.at(counts, dense.reshape(-1), seg_counts)
    has = counts.sum(axis=1) > 0
    n_pct = len(stats.PERCENTILES)
    return stats._Groups([k for k, h in zip(uniq.tolist(), has) if h], counts[has],
                         np.full((int(has.sum()), n_pct), np.nan), counts.sum(axis=0), np.full(n_pct, np.nan))


def _row_counts(conn: Connection, flt: "HistoryFilter", lo_us: int, hi_us: int, key):
    sub = replace(flt, since=_dt(lo_us), until=_dt(hi_us))
    cols = [Inspection.verdict] if key is None else [key, Inspection.verdict]
    return conn.execute(sub.apply(select(*cols, func.count())).group_by(*cols))


def source_verdict_counts(conn: Connection, flt: "HistoryFilter") -> dict[tuple[str, str], int]:
    """{(source, verdict): count} over ``flt``'s period: whole hours from the rollup, the partial
    hours at the edges from rows."""
    since = None if flt.since is None else _us(flt.since)
    until = None if flt.until is None else _us(flt.until)
    h0 = None if since is None else -(-since // _HOUR_US)
    h1 = None if until is None else until // _HOUR_US
    out: dict[tuple[str, str], int] = {}

    def put(s, v, n):
        out[(s, v)] = out.get((s, v), 0) + int(n)

    edges = []
    if h0 is not None and h1 is not None and h0 >= h1:  # inside one hour: rows only
        edges.append((since, until))
    else:
        stmt = _rollup_where(select(YieldHour.source, YieldHour.verdict, func.sum(YieldHour.count)), flt, h0, h1)
        for s, v, n in conn.execute(stmt.group_by(YieldHour.source, YieldHour.verdict)):
            put(s, v, n)
        if since is not None and since < h0 * _HOUR_US:
            edges.append((since, h0 * _HOUR_US))
        if until is not None and h1 * _HOUR_US < until:
            edges.append((h1 * _HOUR_US, until))
    # grouped by source || '': see inspector/console/queries.source_counts
    key = Inspection.source.concat("").label("s")
    for lo, hi in edges:
        for s, v, n in _row_counts(conn, flt, lo, hi, key):
            put(s, v, n)
    return out


__all__ = ["add", "usable", "hour_of", "period_range", "segment_counts", "time_groups", "source_verdict_counts", "MAX_EDGE_PIECES"]
