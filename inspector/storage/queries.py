"""Read queries over the results database: history listings (streamed) and one inspection.

Listings stream: rows come from the driver in chunks (``yield_per``; a server-side cursor on
PostgreSQL), so exporting a million rows holds a few thousand in memory at most.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator, Optional

from sqlalchemy import Select, and_, exists, or_, select

from inspector.errors import InspectorError
from inspector.storage.database import ResultStore, translate_errors
from inspector.storage.models import DefectRegion, Inspection, ModelBundle
from inspector.storage.fields import HISTORY_COLUMNS, VERDICTS, iso_utc, to_jsonable


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(text: str, *, now: Optional[datetime] = None) -> datetime:
    """An aware UTC datetime from ISO 8601 or a relative age (``30m``, ``2h``, ``7d``, ``1w`` ago).

    ISO times without an offset are taken as UTC (every time the database holds and prints is
    UTC). Raises InspectorError with the accepted forms."""
    now = now or datetime.now(timezone.utc)
    m = _RELATIVE.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])
    s = text.strip()
    if s.lower() == "now":
        return now
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InspectorError(f"time {text!r} not understood; use ISO 8601 (2024-05-01T06:00, UTC unless an "
                             "offset is given) or an age such as 30m, 2h, 7d, 1w") from None
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


@dataclass(frozen=True)
class HistoryFilter:
    """Which inspections to list. All conditions combine with AND; None means "any"."""

    since: Optional[datetime] = None  # captured_at >= since
    until: Optional[datetime] = None  # captured_at < until
    verdict: Optional[str] = None
    source: Optional[str] = None
    bundle_id: Optional[str] = None
    min_score: Optional[float] = None
    region_area_min: Optional[int] = None  # at least one region this large (pixels)

    def apply(self, stmt: Select) -> Select:
        cond = []
        if self.since is not None:
            cond.append(Inspection.captured_at >= self.since)
        if self.until is not None:
            cond.append(Inspection.captured_at < self.until)
        if self.verdict is not None:
            if self.verdict not in VERDICTS:
                raise InspectorError(f"verdict {self.verdict!r} is not allowed; expected one of {list(VERDICTS)}")
            cond.append(Inspection.verdict == self.verdict)
        if self.source is not None:
            cond.append(Inspection.source == self.source)
        if self.bundle_id is not None:
            cond.append(Inspection.bundle_id == self.bundle_id)
        if self.min_score is not None:
            cond.append(Inspection.score >= self.min_score)
        if self.region_area_min is not None:
            cond.append(exists().where(and_(DefectRegion.inspection_id == Inspection.id,
                                            DefectRegion.area >= self.region_area_min)))
        return stmt.where(*cond) if cond else stmt


def history_select(flt: HistoryFilter, *, limit: Optional[int] = None, offset: int = 0,
                   oldest_first: bool = False, highest_score_first: bool = False) -> Select:
    cols = [getattr(Inspection, c) for c in HISTORY_COLUMNS]
    stmt = flt.apply(select(*cols))
    if highest_score_first:
        stmt = stmt.where(Inspection.score.is_not(None)).order_by(Inspection.score.desc(), Inspection.id.desc())
    elif oldest_first:
        stmt = stmt.order_by(Inspection.captured_at.asc(), Inspection.id.asc())
    else:
        stmt = stmt.order_by(Inspection.captured_at.desc(), Inspection.id.desc())
    if offset:
        stmt = stmt.offset(offset)
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


@dataclass(frozen=True)
class Cursor:
    """Where a page starts: the (captured_at, id) of the row before it, in the page's order."""

    at: datetime
    id: int

    def encode(self) -> str:
        return f"{self.at.astimezone(timezone.utc).strftime('%Y%m%dT%H%M%S.%f')}_{self.id}"

    @staticmethod
    def decode(text_: Optional[str]) -> Optional["Cursor"]:
        if not text_:
            return None
        try:
            at, _, i = text_.partition("_")
            return Cursor(datetime.strptime(at, "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc), int(i))
        except ValueError:
            return None


def after_cursor(stmt, cur: Cursor, older: bool):
    """Rows strictly beyond ``cur`` in (captured_at, id) order. Written as a range on captured_at
    (which the indexes serve) plus a tie-break, not as a row-value or OR, so the database seeks."""
    if older:
        return stmt.where(Inspection.captured_at <= cur.at,
                          or_(Inspection.captured_at < cur.at, Inspection.id < cur.id))
    return stmt.where(Inspection.captured_at >= cur.at, or_(Inspection.captured_at > cur.at, Inspection.id > cur.id))


def keyset_pages(store: ResultStore, stmt: Select, *, older: bool, chunk: int = 2000, offset: int = 0,
                 limit: Optional[int] = None) -> Iterator[dict[str, Any]]:
    """The rows of ``stmt`` (HISTORY_COLUMNS, ordered by (captured_at, id), newest first when
    ``older``), read in keyset pages of ``chunk`` rows. Each page is read whole on its own
    connection, which goes back to the pool (its transaction ended) before the first of its rows is
    handed on: a reader that stalls (a download, a pipe into ``less``) holds no read transaction
    open (on SQLite one would block WAL checkpoints, so the WAL grows; on PostgreSQL it would hold
    a snapshot back from vacuum). The pages are not one snapshot: a row written or pruned meanwhile
    is in it or not by where it falls in the order."""
    cursor, left = None, limit
    while left is None or left > 0:
        n = chunk if left is None else min(chunk, left)
        page = stmt.offset(offset) if cursor is None and offset else stmt
        if cursor is not None:
            page = after_cursor(page, cursor, older)
        with translate_errors("listing inspections", store.url), store.engine.connect() as conn:
            rows = [dict(zip(HISTORY_COLUMNS, r)) for r in conn.execute(page.limit(n))]
        yield from rows
        if len(rows) < n:
            return
        left = None if left is None else left - len(rows)
        cursor = Cursor(rows[-1]["captured_at"], rows[-1]["id"])


def iter_history(store: ResultStore, flt: HistoryFilter, *, limit: Optional[int] = None, offset: int = 0,
                 oldest_first: bool = False, highest_score_first: bool = False,
                 chunk: int = 2000) -> Iterator[dict[str, Any]]:
    """Stream matching inspections as dicts keyed by HISTORY_COLUMNS (newest first by default).
    Datetimes are aware UTC. By time, in keyset pages that hold no transaction between them
    (keyset_pages); by score, one streamed query."""
    if not highest_score_first:
        yield from keyset_pages(store, history_select(flt, oldest_first=oldest_first), older=not oldest_first,
                                chunk=chunk, offset=offset, limit=limit)
        return
    stmt = history_select(flt, limit=limit, offset=offset, highest_score_first=True)
    with translate_errors("listing inspections", store.url), store.engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk).execute(stmt)
        for part in result.partitions():
            for row in part:
                yield dict(zip(HISTORY_COLUMNS, row))


def count_history(store: ResultStore, flt: HistoryFilter) -> int:
    from sqlalchemy import func

    with translate_errors("counting inspections", store.url), store.engine.connect() as conn:
        return int(conn.execute(flt.apply(select(func.count()).select_from(Inspection))).scalar() or 0)


def iter_regions(store: ResultStore, flt: HistoryFilter, *, chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Stream the defect regions of matching inspections, with their frame's size and time."""
    stmt = flt.apply(select(DefectRegion.id, DefectRegion.inspection_id, DefectRegion.x, DefectRegion.y,
                            DefectRegion.w, DefectRegion.h, DefectRegion.area, DefectRegion.peak_score,
                            Inspection.image_w, Inspection.image_h, Inspection.captured_at, Inspection.source)
                     .join(Inspection, Inspection.id == DefectRegion.inspection_id)).order_by(DefectRegion.id)
    names = ("id", "inspection_id", "x", "y", "w", "h", "area", "peak_score", "image_w", "image_h",
             "captured_at", "source")
    with translate_errors("listing regions", store.url), store.engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk).execute(stmt)
        for part in result.partitions():
            for row in part:
                yield dict(zip(names, row))


def get_inspection(store: ResultStore, inspection_id: int) -> Optional[dict[str, Any]]:
    """Every column of one inspection plus ``regions`` (list of dicts) and ``bundle_path``."""
    with translate_errors(f"reading inspection {inspection_id}", store.url), store.session() as s:
        row = s.get(Inspection, inspection_id)
        if row is None:
            return None
        out = {c.key: getattr(row, c.key) for c in Inspection.__table__.columns}
        out["regions"] = [{f: getattr(r, f) for f in ("x", "y", "w", "h", "area", "peak_score")}
                          for r in row.regions]
        bundle = s.get(ModelBundle, row.bundle_id) if row.bundle_id else None
        out["bundle_path"] = bundle.path if bundle else None
        return out


__all__ = [
    "HistoryFilter", "HISTORY_COLUMNS", "VERDICTS", "parse_when", "history_select", "iter_history",
    "count_history", "iter_regions", "get_inspection", "iso_utc", "to_jsonable",
]
