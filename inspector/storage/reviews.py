"""Operators' reviews of inspections (table ``reviews``, migration 4): record one, read the newest
per inspection, and sum them up over a period (confirmed yield, false-reject rate on the line).

Reviews are appended, never updated: an operator who changes their mind adds a review, and the
newest one (highest id) of an inspection is the one that counts everywhere.

What a review may say depends on the verdict: ``confirmed_defect`` and ``false_reject`` judge a
fail, ``missed_defect`` (an escape) judges a pass. Anything else is refused, so the summary's
rates mean what they say.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from sqlalchemy import func, insert, select

from inspector.errors import InspectorError
from inspector.storage.database import ResultStore, translate_errors
from inspector.storage.models import Inspection, Review
from inspector.storage.queries import HistoryFilter

REVIEW_KINDS = ("confirmed_defect", "false_reject", "missed_defect")
REVIEW_LABELS = {"confirmed_defect": "confirmed defect", "false_reject": "false reject",
                 "missed_defect": "missed defect (escape)"}
# which verdict each kind judges
KIND_VERDICT = {"confirmed_defect": "fail", "false_reject": "fail", "missed_defect": "pass"}
MAX_DEFECT_TYPE = 64
MAX_NOTE = 2000
MAX_REVIEWER = 128
_FIELDS = ("id", "inspection_id", "kind", "defect_type", "note", "reviewer", "created_at")


def record_review(store: ResultStore, inspection_id: int, kind: str, *, reviewer: str,
                  defect_type: Optional[str] = None, note: Optional[str] = None,
                  now: Optional[datetime] = None) -> int:
    """Insert one review; returns its id. Raises InspectorError for an unknown kind, a kind that
    does not fit the verdict, an unknown inspection or over-long text."""
    if kind not in REVIEW_KINDS:
        raise InspectorError(f"review kind {kind!r} is not allowed; expected one of {list(REVIEW_KINDS)}")
    defect_type = (defect_type or "").strip() or None
    note = (note or "").strip() or None
    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise InspectorError("a review needs a reviewer name")
    for name, value, limit in (("defect type", defect_type, MAX_DEFECT_TYPE), ("note", note, MAX_NOTE),
                               ("reviewer", reviewer, MAX_REVIEWER)):
        if value is not None and len(value) > limit:
            raise InspectorError(f"{name} is longer than {limit} characters")
    if store.read_only:
        raise InspectorError("the database was opened read-only; reviews cannot be recorded")
    with translate_errors("recording a review", store.url), store.engine.begin() as conn:
        verdict = conn.execute(select(Inspection.verdict).where(Inspection.id == inspection_id)).scalar()
        if verdict is None:
            raise InspectorError(f"no inspection #{inspection_id}")
        if KIND_VERDICT[kind] != verdict:
            raise InspectorError(f"a {REVIEW_LABELS[kind]} judges a {KIND_VERDICT[kind]}; "
                                 f"inspection #{inspection_id} is a {verdict}")
        res = conn.execute(insert(Review).values(
            inspection_id=inspection_id, kind=kind, defect_type=defect_type, note=note, reviewer=reviewer,
            created_at=now or datetime.now(timezone.utc)))
        return int(res.inserted_primary_key[0])


def reviews_of(store: ResultStore, inspection_id: int) -> list[dict[str, Any]]:
    """Every review of one inspection, newest first."""
    cols = [getattr(Review, f) for f in _FIELDS]
    with translate_errors("reading reviews", store.url), store.engine.connect() as conn:
        rows = conn.execute(select(*cols).where(Review.inspection_id == inspection_id)
                            .order_by(Review.id.desc())).all()
    return [dict(zip(_FIELDS, r)) for r in rows]


def latest_reviews(store: ResultStore, inspection_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """The newest review of each of ``inspection_ids`` that has one (a page of history)."""
    ids = sorted(set(int(i) for i in inspection_ids))
    if not ids:
        return {}
    newest = select(func.max(Review.id)).where(Review.inspection_id.in_(ids)).group_by(Review.inspection_id)
    cols = [getattr(Review, f) for f in _FIELDS]
    with translate_errors("reading reviews", store.url), store.engine.connect() as conn:
        rows = conn.execute(select(*cols).where(Review.id.in_(newest))).all()
    return {r[1]: dict(zip(_FIELDS, r)) for r in rows}


def _newest_ids():
    return select(func.max(Review.id)).group_by(Review.inspection_id)


@dataclass(frozen=True)
class ReviewSummary:
    """Reviews (newest per inspection) of the inspections a filter matches, and what they imply."""

    passed: int
    failed: int
    confirmed_defects: int
    false_rejects: int
    missed_defects: int

    @property
    def reviewed_fails(self) -> int:
        return self.confirmed_defects + self.false_rejects

    @property
    def confirmed_yield_pct(self) -> Optional[float]:
        """Yield with the reviews applied: false rejects were good parts, escapes were bad ones."""
        n = self.passed + self.failed
        good = self.passed + self.false_rejects - self.missed_defects
        return 100.0 * good / n if n else None

    @property
    def false_reject_pct_of_reviewed(self) -> Optional[float]:
        """Of the fails an operator looked at, the share that were good parts."""
        return 100.0 * self.false_rejects / self.reviewed_fails if self.reviewed_fails else None

    @property
    def false_reject_pct_of_inspected(self) -> Optional[float]:
        n = self.passed + self.failed
        return 100.0 * self.false_rejects / n if n else None

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failed": self.failed, "confirmed_defects": self.confirmed_defects,
                "false_rejects": self.false_rejects, "missed_defects": self.missed_defects,
                "confirmed_yield_pct": self.confirmed_yield_pct,
                "false_reject_pct_of_reviewed": self.false_reject_pct_of_reviewed,
                "false_reject_pct_of_inspected": self.false_reject_pct_of_inspected}


def review_summary(store: ResultStore, flt: HistoryFilter = HistoryFilter(), *,
                   verdict_counts: Optional[tuple[int, int]] = None) -> ReviewSummary:
    """Pass/fail counts of the inspections ``flt`` matches and their newest reviews by kind.
    ``verdict_counts`` = (passed, failed) when the caller has them already (stats' TOTAL row)."""
    with translate_errors("summing up reviews", store.url), store.engine.connect() as conn:
        if verdict_counts is not None:
            verdicts = {"pass": verdict_counts[0], "fail": verdict_counts[1]}
        else:
            verdicts = dict(conn.execute(flt.apply(select(Inspection.verdict, func.count()))
                                         .where(Inspection.verdict.in_(("pass", "fail")))
                                         .group_by(Inspection.verdict)).all())
        kinds = dict(conn.execute(flt.apply(select(Review.kind, func.count())
                                            .join(Inspection, Inspection.id == Review.inspection_id))
                                  .where(Review.id.in_(_newest_ids())).group_by(Review.kind)).all())
    return ReviewSummary(passed=int(verdicts.get("pass", 0)), failed=int(verdicts.get("fail", 0)),
                         confirmed_defects=int(kinds.get("confirmed_defect", 0)),
                         false_rejects=int(kinds.get("false_reject", 0)),
                         missed_defects=int(kinds.get("missed_defect", 0)))


def reviewed_frames(store: ResultStore, *, since: Optional[datetime] = None,
                    kinds: Iterable[str] = REVIEW_KINDS) -> list[dict[str, Any]]:
    """Inspections whose newest review (made at or after ``since``) is one of ``kinds``, with the
    frame's stored path: what `inspector calibrate --from-reviews` learns from."""
    kinds = tuple(kinds)
    stmt = (select(Inspection.id, Inspection.source, Inspection.origin_name, Inspection.stored_path,
                   Inspection.score, Review.kind, Review.defect_type, Review.created_at)
            .join(Review, Review.inspection_id == Inspection.id)
            .where(Review.id.in_(_newest_ids()), Review.kind.in_(kinds)).order_by(Inspection.id))
    if since is not None:
        stmt = stmt.where(Review.created_at >= since)
    names = ("inspection_id", "source", "origin_name", "stored_path", "score", "kind", "defect_type", "reviewed_at")
    with translate_errors("listing reviewed frames", store.url), store.engine.connect() as conn:
        return [dict(zip(names, r)) for r in conn.execute(stmt).all()]
