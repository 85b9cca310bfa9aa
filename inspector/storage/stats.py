"""Aggregates over inspections: counts, yield and score percentiles per hour/day/shift/source/bundle.

One streamed pass: the database returns (epoch seconds, verdict code, score[, key]) in chunks
that are packed into numpy arrays (24 bytes a row), then grouped with numpy. This is the same
code on SQLite (which has no percentile function) and PostgreSQL, and it lets hour/day/shift
buckets follow a local time zone with daylight-saving changes.

Percentiles are numpy's default (linear interpolation between closest ranks) over the scored
rows (pass and fail; error rows have no score). Yield = pass / (pass + fail), errors excluded.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone, tzinfo
from typing import Iterable, Literal, Optional, Sequence

import numpy as np
from sqlalchemy import Integer, case, cast, func, select

from inspector.errors import InspectorError
from inspector.storage.database import ResultStore, translate_errors
from inspector.storage.models import Inspection
from inspector.storage.queries import HistoryFilter

GroupBy = Literal["hour", "day", "shift", "source", "bundle"]
GROUP_BYS: tuple[str, ...] = ("hour", "day", "shift", "source", "bundle")
PERCENTILES = (50.0, 95.0, 99.0)
TOTAL_KEY = "TOTAL"


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


STATS_COLUMNS = ("key", "total", "passed", "failed", "errors", "yield_pct", "p50", "p95", "p99")


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


def _fetch(store: ResultStore, by: str, flt: HistoryFilter, chunk: int):
    """Stream the columns the grouping needs into numpy arrays."""
    if store.dialect == "sqlite":
        epoch = cast(func.strftime("%s", Inspection.captured_at), Integer)
    else:
        epoch = cast(func.floor(func.extract("epoch", Inspection.captured_at)), Integer)
    vcode = case((Inspection.verdict == "pass", 0), (Inspection.verdict == "fail", 1), else_=2)
    cols = [vcode, Inspection.score]
    if by in ("hour", "day", "shift"):
        cols.append(epoch)
    elif by == "source":
        cols.append(Inspection.source)
    else:
        cols.append(Inspection.bundle_id)
    stmt = flt.apply(select(*cols))
    v_parts, s_parts, k_parts = [], [], []
    names: dict = {}
    with translate_errors("computing stats", store.url), store.engine.connect() as conn:
        for part in _chunks(conn, stmt, chunk):
            v, s, k = zip(*part)
            v_parts.append(np.fromiter(v, dtype=np.int8, count=len(v)))
            s_parts.append(np.array(s, dtype=np.float64))  # None -> nan
            if by in ("hour", "day", "shift"):
                k_parts.append(np.fromiter(k, dtype=np.int64, count=len(k)))
            else:
                k_parts.append(np.fromiter((names.setdefault(x, len(names)) for x in k), dtype=np.int64,
                                           count=len(k)))
    if not v_parts:
        return np.zeros(0, np.int8), np.zeros(0), np.zeros(0, np.int64), names
    return np.concatenate(v_parts), np.concatenate(s_parts), np.concatenate(k_parts), names


def _chunks(conn, stmt, chunk: int):
    """Lists of plain tuples. On SQLite the statement runs on the driver's cursor directly
    (parameters still go through the column types' bind processing): SQLAlchemy's per-row
    result machinery would double the time of a million-row pass. Elsewhere: a streamed
    (server-side) result."""
    dialect = conn.dialect
    if dialect.name == "sqlite" and dialect.paramstyle == "qmark":
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
    result = conn.execution_options(yield_per=chunk).execute(stmt)
    for part in result.partitions():
        yield part


def _local_epochs(epochs: np.ndarray, tz: tzinfo) -> np.ndarray:
    """Shift UTC epoch seconds to local wall-clock seconds (offset looked up per UTC hour)."""
    if tz is timezone.utc or len(epochs) == 0:
        return epochs
    hours, inv = np.unique(epochs // 3600, return_inverse=True)
    offsets = np.array([int(datetime.fromtimestamp(int(h) * 3600, tz).utcoffset().total_seconds())
                        for h in hours], dtype=np.int64)
    return epochs + offsets[inv]


def _group_percentiles(group: np.ndarray, scores: np.ndarray, n_groups: int) -> np.ndarray:
    """[n_groups, len(PERCENTILES)] linear-interpolated percentiles of non-nan scores (nan when none)."""
    ok = ~np.isnan(scores)
    g, s = group[ok], scores[ok]
    out = np.full((n_groups, len(PERCENTILES)), np.nan)
    if len(s) == 0:
        return out
    # one sort on group + score squeezed into [0, 0.5): same order as sorting by (group, score)
    # up to ties closer than ~1e-12 of the score range, and the values read back are exact
    lo_s, hi_s = float(s.min()), float(s.max())
    key = g.astype(np.float64) + (s - lo_s) / ((hi_s - lo_s) * 2.0 + 1e-300)
    order = np.argsort(key, kind="stable")
    s = s[order]
    counts = np.bincount(g, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    for j, p in enumerate(PERCENTILES):
        pos = (counts[has] - 1) * (p / 100.0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.ceil(pos).astype(np.int64)
        base = starts[has]
        a, b = s[base + lo], s[base + hi]
        out[has, j] = a + (b - a) * (pos - lo)
    return out


def compute_stats(store: ResultStore, by: str, flt: HistoryFilter = HistoryFilter(), *,
                  shifts: Sequence[Shift] = (), tz: tzinfo = timezone.utc, chunk: int = 100_000,
                  include_total: bool = True) -> list[StatsRow]:
    """Rows per group in key order (chronological for hour/day/shift), plus a TOTAL row.

    hour/day/shift buckets are in ``tz`` local time; hour keys read "YYYY-MM-DD HH:00", day keys
    "YYYY-MM-DD", shift keys "YYYY-MM-DD <shift name>" (frames outside every shift: "(no shift)")."""
    if by not in GROUP_BYS:
        raise InspectorError(f"--by {by!r} is not allowed; expected one of {list(GROUP_BYS)}")
    if by == "shift" and not shifts:
        raise InspectorError("--by shift needs shifts in the config (shifts: - {name: early, start: '06:00', "
                             "end: '14:00'}); pass --config")
    verdicts, scores, keys, names = _fetch(store, by, flt, chunk)
    rows: list[StatsRow] = []
    if len(verdicts):
        labels: list[str]
        starts: list[Optional[datetime]]
        if by in ("hour", "day", "shift"):
            local = _local_epochs(keys, tz)
            if by == "hour":
                bucket = local // 3600
            elif by == "day":
                bucket = local // 86400
            else:
                idx, back = _minute_table(shifts)
                minute = (local % 86400) // 60
                day = local // 86400 + back[minute]
                sidx = idx[minute]
                bucket = day * (len(shifts) + 1) + (sidx + 1)
            uniq, inv = np.unique(bucket, return_inverse=True)
            labels, starts = [], []
            epoch0 = datetime(1970, 1, 1)
            for u in uniq.tolist():
                if by == "hour":
                    wall = epoch0 + timedelta(hours=u)
                    labels.append(wall.strftime("%Y-%m-%d %H:00"))
                elif by == "day":
                    wall = epoch0 + timedelta(days=u)
                    labels.append(wall.strftime("%Y-%m-%d"))
                else:
                    d, s = divmod(u, len(shifts) + 1)
                    wall = epoch0 + timedelta(days=d)
                    name = shifts[s - 1].name if s > 0 else "(no shift)"
                    if s > 0:
                        st = shifts[s - 1].start
                        wall = wall.replace(hour=st.hour, minute=st.minute)
                    labels.append(f"{wall:%Y-%m-%d} {name}")
                starts.append(wall.replace(tzinfo=tz).astimezone(timezone.utc))
        else:
            inv_names = {v: k for k, v in names.items()}
            uniq, inv = np.unique(keys, return_inverse=True)
            labels = ["(none)" if inv_names[int(u)] is None else str(inv_names[int(u)]) for u in uniq]
            starts = [None] * len(labels)
        inv = inv.reshape(-1)
        n = len(uniq)
        counts = np.stack([np.bincount(inv[verdicts == c], minlength=n) for c in (0, 1, 2)], axis=1)
        pct = _group_percentiles(inv, scores, n)
        for i in range(n):
            rows.append(_row(labels[i], counts[i], pct[i], starts[i]))
        if by in ("source", "bundle"):
            rows.sort(key=lambda r: r.key)
    if include_total:
        counts = np.array([(verdicts == c).sum() for c in (0, 1, 2)])
        pct = _group_percentiles(np.zeros(len(scores), np.int64), scores, 1)[0]
        rows.append(_row(TOTAL_KEY, counts, pct, None))
    return rows


def _row(key: str, counts: Iterable, pct: np.ndarray, start: Optional[datetime]) -> StatsRow:
    p, f, e = (int(c) for c in counts)

    def num(x):
        return None if np.isnan(x) else float(x)

    return StatsRow(key=key, total=p + f + e, passed=p, failed=f, errors=e,
                    yield_pct=(100.0 * p / (p + f)) if (p + f) else None,
                    p50=num(pct[0]), p95=num(pct[1]), p99=num(pct[2]), start=start)
