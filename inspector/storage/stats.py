"""Aggregates over inspections: counts, yield and score percentiles per hour/day/shift/source/bundle.

Time buckets (hour/day/shift) follow a local time zone with daylight-saving changes. They are not
computed per row: the period is cut into *segments*, UTC ranges inside which the bucket cannot
change (a few per UTC hour, see ``_time_segments``), and the database matches rows to segments by
``captured_at`` range on its indexes, so no timestamp is converted or sent per row.

- SQLite (no percentile function), in one read transaction (a consistent snapshot): counts per
  segment and verdict, each a range count on the (verdict, captured_at) index; then the score
  column alone, streamed in ``captured_at`` order, i.e. segment after segment, so the counts tell
  which bucket each score belongs to; numpy sorts each bucket's scores and interpolates.
  About 0.6 s of CPU for a million rows.
- PostgreSQL: all in SQL, ``width_bucket`` over the segment starts and ``percentile_cont``, in a
  REPEATABLE READ transaction so the TOTAL row matches the groups.
- source/bundle: GROUP BY for the counts; (key, score) pairs streamed for the percentiles on SQLite.

Percentiles are numpy's default (linear interpolation between closest ranks, the same formula as
percentile_cont) over the scored rows (pass and fail; error rows have no score).
Yield = pass / (pass + fail), errors excluded.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Iterable, Literal, Optional, Sequence

import numpy as np
from sqlalchemy import DateTime, Float, Integer, String, and_, bindparam, cast, column, func, null, select, text
from sqlalchemy.sql.elements import Grouping

from inspector.errors import InspectorError
from inspector.storage import rollup
from inspector.storage.database import ResultStore, translate_errors
from inspector.storage.models import Inspection
from inspector.storage.queries import VERDICTS, HistoryFilter
from inspector.storage.fields import GROUP_BYS, STATS_COLUMNS  # noqa: F401 - STATS_COLUMNS re-exported

GroupBy = Literal["hour", "day", "shift", "source", "bundle"]
PERCENTILES = (50.0, 95.0, 99.0)
TOTAL_KEY = "TOTAL"
_VERDICT_CODE = {"pass": 0, "fail": 1, "error": 2}


@dataclass(frozen=True)
class Shift:
    """A named shift in local time; ``end <= start`` means it runs past midnight (and counts
    toward the day it started)."""

    name: str
    start: time
    end: time


@dataclass(frozen=True)
class StatsRow:
    key: str
    total: int
    passed: int
    failed: int
    errors: int
    yield_pct: Optional[float]  # 100 * pass / (pass + fail); None when neither
    p50: Optional[float]
    p95: Optional[float]
    p99: Optional[float]
    # bucket start as aware UTC for time groupings (charts), else None
    start: Optional[datetime] = None

    def as_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("key", "total", "passed", "failed", "errors", "yield_pct",
                                            "p50", "p95", "p99")}
        return d


def _minute_table(shifts: Sequence[Shift]) -> tuple[np.ndarray, np.ndarray]:
    """For each minute of the day: shift index (-1: none) and day offset (-1 when the minute
    belongs to a shift that started the day before)."""
    idx = np.full(1440, -1, dtype=np.int64)
    back = np.zeros(1440, dtype=np.int64)
    for i, sh in enumerate(shifts):
        a = sh.start.hour * 60 + sh.start.minute
        b = sh.end.hour * 60 + sh.end.minute
        minutes = list(range(a, b)) if b > a else list(range(a, 1440)) + list(range(0, b))
        taken = [m for m in minutes if idx[m] >= 0]
        if taken:
            other = shifts[int(idx[taken[0]])].name
            raise InspectorError(f"shifts {other!r} and {sh.name!r} overlap at "
                                 f"{taken[0] // 60:02d}:{taken[0] % 60:02d}; make them disjoint")
        idx[minutes] = i
        if b <= a:
            back[list(range(0, b))] = -1
    return idx, back


_TIME_BYS = ("hour", "day", "shift")
_EPOCH0 = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class _Groups:
    """Aggregates before labelling: one entry per group that has rows."""

    keys: list  # time: bucket numbers (see _bucket_of_local); source/bundle: the column values
    counts: np.ndarray  # [n, 3] int64: pass, fail, error
    pct: np.ndarray  # [n, len(PERCENTILES)] float64, nan where a group has no score
    total_counts: np.ndarray  # [3]
    total_pct: np.ndarray  # [len(PERCENTILES)]


def _no_groups() -> _Groups:
    return _Groups([], np.zeros((0, 3), np.int64), np.zeros((0, len(PERCENTILES))), np.zeros(3, np.int64),
                   np.full(len(PERCENTILES), np.nan))


def _hour_offsets(hours: np.ndarray, tz: tzinfo) -> np.ndarray:
    """UTC offset (seconds) of ``tz`` at the start of each UTC hour in ``hours`` (hours since the epoch)."""
    fixed = tz.utcoffset(None)  # timezone.utc and fixed offsets answer without a datetime
    if fixed is not None:
        return np.full(len(hours), int(fixed.total_seconds()), np.int64)
    return np.array([int(datetime.fromtimestamp(h * 3600, tz).utcoffset().total_seconds()) for h in hours.tolist()],
                    dtype=np.int64)


def _bucket_of_local(by: str, local: np.ndarray, shifts: Sequence[Shift]) -> np.ndarray:
    """Bucket numbers of local wall-clock epoch seconds: hours or days since the epoch, or for
    shifts ``day * (len(shifts) + 1) + shift index + 1`` (0: outside every shift)."""
    if by == "hour":
        return local // 3600
    if by == "day":
        return local // 86400
    idx, back = _minute_table(shifts)
    minute = (local % 86400) // 60
    day = local // 86400 + back[minute]
    return day * (len(shifts) + 1) + (idx[minute] + 1)


def _time_segments(by: str, first: int, last: int, tz: tzinfo,
                   shifts: Sequence[Shift]) -> tuple[np.ndarray, np.ndarray, int]:
    """Cut the UTC epoch seconds ``first..last`` into segments inside which the ``by`` bucket
    stays the same: (segment starts [m] int64, their buckets [m] int64, end of the last segment).

    An instant's bucket is that of its local wall-clock time, with the UTC offset taken at the
    start of its UTC hour. The bucket can therefore change only at a UTC hour start or where local
    time crosses a bucket edge (an hour; midnight; a shift's start or end). Those instants are the
    candidates; runs of candidates with the same bucket merge into one segment. One bucket can
    own several separate segments (a day's "(no shift)" gaps)."""
    hours = np.arange(first // 3600, last // 3600 + 1, dtype=np.int64)
    base = hours * 3600
    offsets = _hour_offsets(hours, tz)
    if by == "hour":
        period, edges = 3600, [0]
    elif by == "day":
        period, edges = 86400, [0]
    else:
        period = 86400
        edges = sorted({0} | {(t.hour * 60 + t.minute) * 60 for s in shifts for t in (s.start, s.end)})
    cands, offs = [base], [offsets]
    for edge in edges:
        at = base + (edge - (base + offsets)) % period  # first instant of the hour whose local time is on the edge
        inside = at < base + 3600
        cands.append(at[inside])
        offs.append(offsets[inside])
    cand, off = np.concatenate(cands), np.concatenate(offs)
    order = np.argsort(cand, kind="stable")
    cand, off = cand[order], off[order]
    bucket = _bucket_of_local(by, cand + off, shifts)
    keep = np.ones(len(cand), dtype=bool)
    keep[1:] = bucket[1:] != bucket[:-1]
    return cand[keep], bucket[keep], int(base[-1] + 3600)


def _epoch_s(dt: datetime) -> int:
    """Whole UTC epoch seconds (floor) of an aware or naive-UTC datetime."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return (dt - _EPOCH0) // _SECOND


def _naive_utc(epochs: np.ndarray) -> list[datetime]:
    return [_EPOCH0 + timedelta(seconds=e) for e in epochs.tolist()]


def _period_range(conn, flt: HistoryFilter) -> Optional[tuple[int, int]]:
    lo, hi = conn.execute(flt.apply(select(func.min(Inspection.captured_at), func.max(Inspection.captured_at)))).one()
    if lo is None or hi is None:
        return None
    return _epoch_s(lo), _epoch_s(hi)


def _order_stats(s_sorted_runs: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Linear-interpolated PERCENTILES of runs of ascending values: run i is
    ``s_sorted_runs[starts[i]:starts[i] + counts[i]]``. [len(counts), len(PERCENTILES)], nan for empty runs."""
    out = np.full((len(counts), len(PERCENTILES)), np.nan)
    has = counts > 0
    for j, p in enumerate(PERCENTILES):
        pos = (counts[has] - 1) * (p / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.ceil(pos).astype(np.int64)
        base = starts[has]
        a, b = s_sorted_runs[base + lo], s_sorted_runs[base + hi]
        out[has, j] = a + (b - a) * (pos - lo)
    return out


def _group_percentiles(group: np.ndarray, scores: np.ndarray, n_groups: int) -> np.ndarray:
    """[n_groups, len(PERCENTILES)] percentiles of the (non-nan) ``scores`` of each group id."""
    if len(scores) == 0:
        return np.full((n_groups, len(PERCENTILES)), np.nan)
    if len(group) > 1 and bool(np.any(group[1:] < group[:-1])):
        s = scores[np.argsort(group, kind="stable")]
    else:
        s = scores.copy()  # already grouped (rows read in segment order)
    counts = np.bincount(group, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    for i in np.flatnonzero(counts > 1).tolist():
        s[starts[i]:starts[i] + counts[i]].sort()  # in place, group by group
    return _order_stats(s, starts, counts)


def _all_percentiles(scores: np.ndarray) -> np.ndarray:
    n = len(scores)
    if n == 0:
        return np.full(len(PERCENTILES), np.nan)
    pos = np.array([(n - 1) * p / 100.0 for p in PERCENTILES])
    ranks = np.unique(np.concatenate([np.floor(pos), np.ceil(pos)]).astype(np.int64))
    part = np.partition(scores, ranks)  # exact order statistics without a full sort
    return _order_stats(part, np.zeros(1, np.int64), np.array([n]))[0]


# ---- SQLite: counts in SQL, scores streamed once, percentiles in numpy

def _raw_cursor_rows(conn, stmt, chunk: int):
    """Lists of plain tuples straight from the sqlite3 cursor (parameters still go through the
    column types' bind processing): SQLAlchemy's per-row result machinery would double the time
    of a million-row pass."""
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect)
    values = compiled.construct_params()
    params = []
    for name in compiled.positiontup or ():
        proc = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
        params.append(proc(values[name]) if proc else values[name])
    cur = conn.connection.driver_connection.cursor()
    try:
        cur.execute(str(compiled), params)
        while True:
            part = cur.fetchmany(chunk)
            if not part:
                return
            yield part
    finally:
        cur.close()


def _count_rows(rows, n: int) -> np.ndarray:
    """(group index, verdict, count) rows -> counts [n, 3] (pass, fail, error; any other verdict
    counts as error)."""
    counts = np.zeros((n, 3), np.int64)
    for g, verdict, c in rows:
        counts[g, _VERDICT_CODE.get(verdict, 2)] += c
    return counts


def _sqlite_segments_cte(conn, starts: np.ndarray, end: int):
    """The segments as a CTE ``seg(i, lo, hi)`` of literal rows, times in the stored text form
    (the column type's own bind processing), so the join compares text with text on the index."""
    proc = Inspection.captured_at.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    bounds = [proc(t) for t in _naive_utc(np.append(starts, end))]
    if any("'" in b for b in bounds):  # never: digits and separators only
        raise InspectorError("unexpected timestamp text form")
    body = ",".join(f"({i},'{bounds[i]}','{bounds[i + 1]}')" for i in range(len(starts)))
    return (text(f"SELECT column1 AS i, column2 AS lo, column3 AS hi FROM (VALUES {body})")
            .columns(column("i", Integer), column("lo", String), column("hi", String)).cte("seg"))


def _range_join_filter(flt: HistoryFilter, stmt):
    """``flt.apply(stmt)`` for the segment join, with the bundle condition written so it cannot
    use its one-column index (SQLite would pick it over the captured_at range: then every
    segment rescans all of that bundle's rows)."""
    if flt.bundle_id is None:
        return flt.apply(stmt)
    return replace(flt, bundle_id=None).apply(stmt).where(Inspection.bundle_id.concat("") == flt.bundle_id)


def _sqlite_groups(conn, by: str, flt: HistoryFilter, shifts: Sequence[Shift], tz: tzinfo, chunk: int,
                   percentiles: bool = True) -> _Groups:
    raw = conn.connection.driver_connection
    # one read transaction: the counts and the score stream must see the same rows
    raw.execute("BEGIN")
    try:
        if by in _TIME_BYS:
            keys, counts, pct, scores = _sqlite_time_groups(conn, by, flt, shifts, tz, chunk, percentiles)
        else:
            keys, counts, pct, scores = _sqlite_column_groups(conn, by, flt, chunk, percentiles)
    finally:
        raw.rollback()
    has = counts.sum(axis=1) > 0
    return _Groups([k for k, h in zip(keys, has) if h], counts[has], pct[has], counts.sum(axis=0),
                   _all_percentiles(scores))


def _sqlite_time_groups(conn, by: str, flt: HistoryFilter, shifts: Sequence[Shift], tz: tzinfo, chunk: int,
                        percentiles: bool = True):
    span = _period_range(conn, flt)
    if span is None:
        g = _no_groups()
        return g.keys, g.counts, g.pct, np.zeros(0)
    starts, seg_bucket, end = _time_segments(by, span[0], span[1], tz, shifts)
    seg = _sqlite_segments_cte(conn, starts, end)
    in_segment = and_(Inspection.captured_at >= seg.c.lo, Inspection.captured_at < seg.c.hi)

    def segment_counts() -> np.ndarray:
        """[segments, 3]: per segment one correlated count per verdict, each a range on the
        (verdict, captured_at) index read in place (a GROUP BY would push every row through a
        sorter first, five times slower)."""
        cols = [_range_join_filter(flt, select(func.count()).select_from(Inspection)
                                   .where(Inspection.verdict == v, in_segment)).scalar_subquery()
                for v in VERDICTS]
        rows = conn.execute(select(seg.c.i, *cols).order_by(seg.c.i)).all()
        out = np.zeros((len(starts), 3), np.int64)
        out[[r[0] for r in rows]] = [r[1:] for r in rows]
        return out

    def segment_counts_any_verdict() -> np.ndarray:
        stmt = select(seg.c.i, Inspection.verdict, func.count()).select_from(seg).join(Inspection, in_segment)
        return _count_rows(conn.execute(_range_join_filter(flt, stmt).group_by(seg.c.i, Inspection.verdict)),
                           len(starts))

    seg_counts = segment_counts()
    if not percentiles:  # counts only: the index range counts are all it takes
        uniq, dense = np.unique(seg_bucket, return_inverse=True)
        counts = np.zeros((len(uniq), 3), np.int64)
        np.add.at(counts, dense.reshape(-1), seg_counts)
        return uniq.tolist(), counts, np.full((len(uniq), len(PERCENTILES)), np.nan), np.zeros(0)
    # every row's score (NULL -> nan) in captured_at order, i.e. segment after segment: the
    # counts say which rows belong to which segment, so no per-row key crosses over
    stmt = flt.apply(select(Inspection.score).order_by(Inspection.captured_at))
    parts = [np.fromiter((np.nan if s is None else s for (s,) in p), np.float64, count=len(p))
             for p in _raw_cursor_rows(conn, stmt, chunk)]
    scores = np.concatenate(parts) if parts else np.zeros(0)
    if len(scores) != int(seg_counts.sum()):
        seg_counts = segment_counts_any_verdict()  # rows with a verdict inspector never writes
        if len(scores) != int(seg_counts.sum()):
            raise InspectorError(f"stats: read {len(scores)} rows but counted {int(seg_counts.sum())}; "
                                 "are there captured_at values not written by inspector?")
    uniq, dense = np.unique(seg_bucket, return_inverse=True)
    dense = dense.reshape(-1)
    counts = np.zeros((len(uniq), 3), np.int64)
    np.add.at(counts, dense, seg_counts)
    row_group = np.repeat(dense, seg_counts.sum(axis=1))
    scored = ~np.isnan(scores)
    scores = scores[scored]
    return uniq.tolist(), counts, _group_percentiles(row_group[scored], scores, len(uniq)), scores


def _sqlite_column_groups(conn, by: str, flt: HistoryFilter, chunk: int, percentiles: bool = True):
    col = Inspection.source if by == "source" else Inspection.bundle_id
    count_rows = conn.execute(flt.apply(select(col, Inspection.verdict, func.count()))
                              .group_by(col, Inspection.verdict)).all()
    keys = sorted({r[0] for r in count_rows}, key=lambda k: (k is not None, k))
    index = {k: i for i, k in enumerate(keys)}
    counts = _count_rows(((index[k], v, c) for k, v, c in count_rows), len(keys))
    if not percentiles:
        return keys, counts, np.full((len(keys), len(PERCENTILES)), np.nan), np.zeros(0)
    g_parts, s_parts = [], []
    stmt = flt.apply(select(col, Inspection.score).where(Inspection.score.is_not(None)))
    for p in _raw_cursor_rows(conn, stmt, chunk):
        g_parts.append(np.fromiter((index[k] for k, _ in p), np.int64, count=len(p)))
        s_parts.append(np.fromiter((s for _, s in p), np.float64, count=len(p)))
    groups = np.concatenate(g_parts) if g_parts else np.zeros(0, np.int64)
    scores = np.concatenate(s_parts) if s_parts else np.zeros(0)
    return keys, counts, _group_percentiles(groups, scores, len(keys)), scores


# ---- PostgreSQL (and other servers with ordered-set aggregates): all in SQL

def _server_groups(conn, by: str, flt: HistoryFilter, shifts: Sequence[Shift], tz: tzinfo,
                   percentiles: bool = True) -> _Groups:
    from sqlalchemy.dialects.postgresql import ARRAY

    if by in _TIME_BYS:
        span = _period_range(conn, flt)
        if span is None:
            return _no_groups()
        starts, seg_bucket, _ = _time_segments(by, span[0], span[1], tz, shifts)
        uniq, dense = np.unique(seg_bucket, return_inverse=True)
        # width_bucket: 1-based segment number by binary search over the starts; [] maps it to a group
        segment = func.width_bucket(Inspection.captured_at,
                                    bindparam("segment_starts", _naive_utc(starts), type_=ARRAY(DateTime)))
        key = Grouping(bindparam("segment_group", dense.reshape(-1).tolist(), type_=ARRAY(Integer)))[segment]
        keys = uniq.tolist()
    else:
        key = Inspection.source if by == "source" else Inspection.bundle_id
        keys = None
    inner = flt.apply(select(key.label("k"), Inspection.verdict.label("v"), Inspection.score.label("s"))).subquery()
    aggs = [func.count().filter(inner.c.v == "pass"), func.count().filter(inner.c.v == "fail"),
            func.count().filter(inner.c.v.not_in(("pass", "fail")))]
    aggs += [func.percentile_cont(p / 100.0).within_group(inner.c.s) if percentiles else cast(null(), Float)
             for p in PERCENTILES]
    # the groups and the total in one pass: GROUPING SETS ((k), ()); grouping(k) = 1 marks the
    # total row (k itself can be NULL: a source or bundle left empty)
    both = conn.execute(select(func.grouping(inner.c.k), inner.c.k, *aggs)
                        .group_by(func.grouping_sets(inner.c.k, text("()")))).all()
    rows = [r[1:] for r in both if r[0] == 0]
    total = next(r[2:] for r in both if r[0] == 1)

    def nums(vals) -> list[float]:
        return [np.nan if v is None else float(v) for v in vals]

    if keys is None:
        rows.sort(key=lambda r: (r[0] is not None, r[0]))
        keys = [r[0] for r in rows]
    else:
        keys = [keys[r[0]] for r in sorted(rows, key=lambda r: r[0])]
        rows.sort(key=lambda r: r[0])
    counts = np.array([r[1:4] for r in rows], np.int64).reshape(-1, 3)
    pct = np.array([nums(r[4:]) for r in rows], np.float64).reshape(-1, len(PERCENTILES))
    return _Groups(keys, counts, pct, np.array(total[:3], np.int64), np.array(nums(total[3:])))


def _time_label(by: str, u: int, shifts: Sequence[Shift], tz: tzinfo) -> tuple[str, datetime]:
    if by == "hour":
        wall = _EPOCH0 + timedelta(hours=u)
        label = wall.strftime("%Y-%m-%d %H:00")
    elif by == "day":
        wall = _EPOCH0 + timedelta(days=u)
        label = wall.strftime("%Y-%m-%d")
    else:
        d, s = divmod(u, len(shifts) + 1)
        wall = _EPOCH0 + timedelta(days=d)
        name = shifts[s - 1].name if s > 0 else "(no shift)"
        if s > 0:
            st = shifts[s - 1].start
            wall = wall.replace(hour=st.hour, minute=st.minute)
        label = f"{wall:%Y-%m-%d} {name}"
    return label, wall.replace(tzinfo=tz).astimezone(timezone.utc)


def compute_stats(store: ResultStore, by: str, flt: HistoryFilter = HistoryFilter(), *,
                  shifts: Sequence[Shift] = (), tz: tzinfo = timezone.utc, chunk: int = 100_000,
                  include_total: bool = True, percentiles: bool = True) -> list[StatsRow]:
    """Rows per group in key order (chronological for hour/day/shift), plus a TOTAL row.

    hour/day/shift buckets are in ``tz`` local time; hour keys read "YYYY-MM-DD HH:00", day keys
    "YYYY-MM-DD", shift keys "YYYY-MM-DD <shift name>" (frames outside every shift: "(no shift)").
    ``percentiles=False``: counts and yield only (p50/p95/p99 None), without reading every score."""
    if by not in GROUP_BYS:
        raise InspectorError(f"--by {by!r} is not allowed; expected one of {list(GROUP_BYS)}")
    if by == "shift" and not shifts:
        raise InspectorError("--by shift needs shifts in the config (shifts: - {name: early, start: '06:00', "
                             "end: '14:00'}); pass --config")
    if by == "shift":
        _minute_table(shifts)  # overlapping shifts are refused even over an empty period
    with translate_errors("computing stats", store.url), store.engine.connect() as conn:
        g = None
        if not percentiles and by in _TIME_BYS and rollup.usable(flt):  # counts only: the per-hour rollup
            g = rollup.time_groups(conn, by, flt, shifts, tz, sqlite=store.dialect == "sqlite")
        if g is None and store.dialect == "sqlite":
            g = _sqlite_groups(conn, by, flt, shifts, tz, chunk, percentiles)
        elif g is None:
            # one snapshot for the groups and the TOTAL row
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            g = _server_groups(conn, by, flt, shifts, tz, percentiles)
    rows: list[StatsRow] = []
    for key, c, p in zip(g.keys, g.counts, g.pct):
        if by in _TIME_BYS:
            label, start = _time_label(by, key, shifts, tz)
        else:
            label, start = ("(none)" if key is None else str(key)), None
        rows.append(_row(label, c, p, start))
    if by in ("source", "bundle"):
        rows.sort(key=lambda r: r.key)
    if include_total:
        rows.append(_row(TOTAL_KEY, g.total_counts, g.total_pct, None))
    return rows


def _row(key: str, counts: Iterable, pct: np.ndarray, start: Optional[datetime]) -> StatsRow:
    p, f, e = (int(c) for c in counts)

    def num(x):
        return None if np.isnan(x) else float(x)

    return StatsRow(key=key, total=p + f + e, passed=p, failed=f, errors=e,
                    yield_pct=(100.0 * p / (p + f)) if (p + f) else None,
                    p50=num(pct[0]), p95=num(pct[1]), p99=num(pct[2]), start=start)
