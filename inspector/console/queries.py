"""What the console's pages read, on top of inspector.storage.queries (the filters and columns of
`inspector history`): the sources, the newest verdicts of each, keyset pages and neighbours.

Every query here is bounded by an index, whatever the table's size: the source list walks
``ix_inspections_source`` one distinct value at a time (a loose index scan), a page is a
``captured_at`` range read from its cursor on, never an OFFSET.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from sqlalchemy import func, select, text

from inspector.storage.database import ResultStore, translate_errors
from inspector.storage.models import DefectRegion, Inspection
from inspector.storage.queries import (HISTORY_COLUMNS, Cursor, HistoryFilter, after_cursor, history_select,
                                      iter_history, keyset_pages)

MAX_SOURCES = 64
EXPORT_PAGE = 2000  # rows per page of the CSV export (each page its own short read)


def sources(store: ResultStore) -> list[str]:
    """The distinct source names, in order (a recursive CTE: one index probe per source)."""
    sql = text("WITH RECURSIVE s(name) AS (SELECT MIN(source) FROM inspections UNION ALL "
               "SELECT (SELECT MIN(source) FROM inspections WHERE source > s.name) FROM s "
               f"WHERE s.name IS NOT NULL) SELECT name FROM s WHERE name IS NOT NULL LIMIT {MAX_SOURCES}")
    with translate_errors("listing sources", store.url), store.engine.connect() as conn:
        return [r[0] for r in conn.execute(sql)]


def max_id(store: ResultStore) -> int:
    with translate_errors("reading the newest id", store.url), store.engine.connect() as conn:
        return int(conn.execute(select(func.max(Inspection.id))).scalar() or 0)


def iter_rows(store: ResultStore, flt: HistoryFilter, review: Optional[str] = None, chunk: int = EXPORT_PAGE):
    """Every matching row, newest first (the CSV export), in keyset pages that hold no read
    transaction while the client takes its time (storage.queries.keyset_pages)."""
    return keyset_pages(store, history_rows_select(flt, review), older=True, chunk=chunk)


def regions_of(store: ResultStore, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
    if not ids:
        return out
    stmt = (select(DefectRegion.inspection_id, DefectRegion.x, DefectRegion.y, DefectRegion.w, DefectRegion.h,
                   DefectRegion.area, DefectRegion.peak_score)
            .where(DefectRegion.inspection_id.in_(ids)).order_by(DefectRegion.id))
    with translate_errors("reading regions", store.url), store.engine.connect() as conn:
        for r in conn.execute(stmt):
            out[r[0]].append({"x": r[1], "y": r[2], "w": r[3], "h": r[4], "area": r[5], "peak_score": r[6]})
    return out


def latest_per_source(store: ResultStore, per_source: int = 6) -> list[dict[str, Any]]:
    """For each source its newest ``per_source`` inspections; sources ordered by their newest
    verdict, newest first. Each: {"source", "rows": [history dicts with "regions"]}."""
    out = []
    for name in sources(store):
        rows = list(iter_history(store, HistoryFilter(source=name), limit=per_source))
        if rows:
            out.append({"source": name, "rows": rows})
    regs = regions_of(store, [r["id"] for s in out for r in s["rows"][:1]])
    for s in out:
        for r in s["rows"]:
            r["regions"] = regs.get(r["id"], [])
    out.sort(key=lambda s: (s["rows"][0]["captured_at"], s["rows"][0]["id"]), reverse=True)
    return out


REVIEW_FILTERS = ("reviewed", "unreviewed", "confirmed_defect", "false_reject", "missed_defect")


def review_condition(review: Optional[str]):
    """A WHERE condition on inspections for the history page's review filter (None: any row).
    A kind matches the newest review of an inspection; the reviewed ids are few, so SQLite looks
    them up by primary key and sorts them, instead of walking the table."""
    from inspector.storage.models import Review

    if not review:
        return None
    if review == "unreviewed":
        return ~select(Review.id).where(Review.inspection_id == Inspection.id).exists()
    newest = select(func.max(Review.id)).group_by(Review.inspection_id)
    ids = select(Review.inspection_id).where(Review.id.in_(newest))
    if review != "reviewed":
        ids = ids.where(Review.kind == review)
    return Inspection.id.in_(ids)


def history_rows_select(flt: HistoryFilter, review: Optional[str] = None, **kw):
    stmt = history_select(flt, **kw)
    cond = review_condition(review)
    return stmt if cond is None else stmt.where(cond)


def page(store: ResultStore, flt: HistoryFilter, *, after: Optional[Cursor] = None,
         before: Optional[Cursor] = None, size: int = 50, review: Optional[str] = None) -> dict[str, Any]:
    """One page, newest first. ``after``: the rows older than that cursor (next page);
    ``before``: the rows newer than it (previous page). Returns rows, and cursors for the
    older and newer pages when there are such rows."""
    newer_first = before is None
    stmt = history_rows_select(flt, review, oldest_first=not newer_first)
    if after is not None:
        stmt = after_cursor(stmt, after, older=True)
    elif before is not None:
        stmt = after_cursor(stmt, before, older=False)
    stmt = stmt.limit(size + 1)
    with translate_errors("listing inspections", store.url), store.engine.connect() as conn:
        rows = [dict(zip(HISTORY_COLUMNS, r)) for r in conn.execute(stmt)]
    more = len(rows) > size
    rows = rows[:size]
    if not newer_first:
        rows.reverse()
    first = Cursor(rows[0]["captured_at"], rows[0]["id"]) if rows else None
    last = Cursor(rows[-1]["captured_at"], rows[-1]["id"]) if rows else None
    older = last if (more if newer_first else True) and rows else None
    newer = first if (after is not None or (before is not None and more)) and rows else None
    return {"rows": rows, "older": older, "newer": newer}


def neighbours(store: ResultStore, row: dict[str, Any], n: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The ``n`` inspections of the same source just before and just after ``row`` in time."""
    cur = Cursor(row["captured_at"], row["id"])
    flt = HistoryFilter(source=row["source"])
    with translate_errors("reading neighbours", store.url), store.engine.connect() as conn:
        before = [dict(zip(HISTORY_COLUMNS, r)) for r in
                  conn.execute(after_cursor(history_select(flt), cur, older=True).limit(n))]
        after = [dict(zip(HISTORY_COLUMNS, r)) for r in
                 conn.execute(after_cursor(history_select(flt, oldest_first=True), cur, older=False).limit(n))]
    return {"before": before, "after": list(reversed(after))}


def source_counts(store: ResultStore, flt: HistoryFilter) -> list[Any]:
    """Per source: total, pass, fail, error and yield over ``flt`` (StatsRow, percentiles None),
    read from indexes: each source's total is a range count on (source, captured_at), the few
    fails and errors come from (verdict, captured_at). A GROUP BY over the period would read
    every row of it (a month of a busy line: a million)."""
    from inspector.storage import rollup
    from inspector.storage.stats import StatsRow

    if rollup.usable(flt):
        return _rollup_source_counts(store, flt)
    names = [flt.source] if flt.source is not None else sources(store)
    with translate_errors("counting per source", store.url), store.engine.connect() as conn:
        # grouped by source || '': grouping by the bare column makes SQLite walk the (source,
        # captured_at) index for its order, every row of the period, instead of the few fails
        key = Inspection.source.concat("").label("s")
        bad = {(r[0], r[1]): int(r[2]) for r in conn.execute(
            flt.apply(select(key, Inspection.verdict, func.count()))
            .where(Inspection.verdict.in_(("fail", "error"))).group_by(key, Inspection.verdict))}
        out = []
        for name in names:
            total = int(conn.execute(replace(flt, source=name).apply(select(func.count()).select_from(Inspection)))
                        .scalar() or 0)
            if not total:
                continue
            f, e = bad.get((name, "fail"), 0), bad.get((name, "error"), 0)
            p = total - f - e
            out.append(StatsRow(key=name, total=total, passed=p, failed=f, errors=e,
                                yield_pct=100.0 * p / (p + f) if p + f else None, p50=None, p95=None, p99=None))
    return out


def _rollup_source_counts(store: ResultStore, flt: HistoryFilter) -> list[Any]:
    """source_counts from the writer's per-hour counts (whole hours) and the rows of the partial
    hours at the period's edges (inspector/storage/rollup.py), in one snapshot."""
    from inspector.storage import rollup
    from inspector.storage.stats import StatsRow

    with translate_errors("counting per source", store.url), store.engine.connect() as conn:
        if store.dialect == "sqlite":
            raw = conn.connection.driver_connection
            raw.execute("BEGIN")  # one read transaction for the rollup and the rows
            try:
                counts = rollup.source_verdict_counts(conn, flt)
            finally:
                raw.rollback()
        else:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            counts = rollup.source_verdict_counts(conn, flt)
    out = []
    for name in sorted({s for s, _ in counts})[:MAX_SOURCES]:
        p, f = counts.get((name, "pass"), 0), counts.get((name, "fail"), 0)
        total = sum(n for (s, _), n in counts.items() if s == name)
        if not total:
            continue
        out.append(StatsRow(key=name, total=total, passed=p, failed=f, errors=total - p - f,
                            yield_pct=100.0 * p / (p + f) if p + f else None, p50=None, p95=None, p99=None))
    return out


__all__ = ["sources", "max_id", "latest_per_source", "Cursor", "page", "neighbours", "regions_of",
           "source_counts", "REVIEW_FILTERS", "review_condition", "iter_rows"]
