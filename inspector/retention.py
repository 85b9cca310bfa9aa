"""Retention: keep the results database and the frame/heatmap folders within limits.

``prune(store_or_url, retention, dry_run=...)`` is what `inspector prune` runs and what the daemon
calls every ``retention.interval_minutes``. Limits (each optional, see RetentionConfig):

- ``max_age_days``: inspection rows older than this are deleted with their regions and files;
- ``max_file_age_days``: frame and heatmap files older than this are deleted, rows kept
  (their paths are set to NULL so `show` never points at a missing file);
- ``max_frame_bytes`` / ``max_heatmap_bytes``: disk budgets; the oldest files go first.

The newest ``keep_newest_fails`` fail rows and their files are evidence and are never deleted.
Files are deleted before their row/path is updated; a crash in between leaves a path to a
missing file (which the next prune clears), never an orphan file nobody knows of.
The per-hour verdict counts (``yield_hours``) are kept: yield history outlives the rows.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Optional, Union

from sqlalchemy import delete, select, update

from inspector.settings import RetentionConfig
from inspector.storage.database import ResultStore, translate_errors
from inspector.storage.models import Inspection

log = logging.getLogger(__name__)
_BATCH = 500


@dataclass
class PruneReport:
    dry_run: bool
    rows_deleted: int = 0
    frames_deleted: int = 0
    heatmaps_deleted: int = 0
    bytes_freed: int = 0
    protected_fails: int = 0
    missing_files: int = 0  # paths that pointed at nothing (cleared unless dry run)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (f"{verb} {self.rows_deleted} rows, {self.frames_deleted} frames, {self.heatmaps_deleted} heatmaps "
                f"({self.bytes_freed / 1e6:.1f} MB); kept the newest {self.protected_fails} fails"
                + (f"; {len(self.errors)} files could not be deleted" if self.errors else ""))


def _size(path: str) -> Optional[int]:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _remove(path: str, report: PruneReport) -> int:
    """Delete one file; return bytes freed (0 when missing or failed)."""
    size = _size(path)
    if size is None:
        report.missing_files += 1
        return 0
    if not report.dry_run:
        try:
            os.remove(path)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            report.errors.append(f"{path}: {exc.strerror}")
            return 0
    return size


def _protected_ids(store: ResultStore, keep: int) -> set[int]:
    if keep <= 0:
        return set()
    with store.engine.connect() as conn:
        rows = conn.execute(select(Inspection.id).where(Inspection.verdict == "fail")
                            .order_by(Inspection.captured_at.desc(), Inspection.id.desc()).limit(keep))
        return {int(r[0]) for r in rows}


def prune(store_or_url: Union[ResultStore, str], retention: RetentionConfig, *, dry_run: bool = False,
          now: Optional[datetime] = None) -> PruneReport:
    """Apply the retention limits once. Raises StorageUnavailable when the database is busy."""
    own = not isinstance(store_or_url, ResultStore)
    store = ResultStore(store_or_url) if own else store_or_url
    try:
        if own:
            store.ensure_schema()
        with translate_errors("pruning", store.url):
            return _prune(store, retention, dry_run=dry_run, now=now or datetime.now(timezone.utc))
    finally:
        if own:
            store.close()


def _prune(store: ResultStore, r: RetentionConfig, *, dry_run: bool, now: datetime) -> PruneReport:
    report = PruneReport(dry_run=dry_run)
    protected = _protected_ids(store, r.keep_newest_fails)
    report.protected_fails = len(protected)

    # 1. rows older than max_age_days (with their files)
    if r.max_age_days is not None:
        cutoff = now - timedelta(days=r.max_age_days)
        with store.engine.connect() as conn:
            old = conn.execute(select(Inspection.id, Inspection.stored_path, Inspection.heatmap_path)
                               .where(Inspection.captured_at < cutoff).order_by(Inspection.id)).all()
        doomed = [row for row in old if int(row[0]) not in protected]
        for i in range(0, len(doomed), _BATCH):
            batch = doomed[i:i + _BATCH]
            for _id, frame_path, heat_path in batch:
                if frame_path:
                    freed = _remove(frame_path, report)
                    report.frames_deleted += bool(freed)
                    report.bytes_freed += freed
                if heat_path:
                    freed = _remove(heat_path, report)
                    report.heatmaps_deleted += bool(freed)
                    report.bytes_freed += freed
            report.rows_deleted += len(batch)
            if not dry_run:
                with store.engine.begin() as conn:  # regions go by ON DELETE CASCADE
                    conn.execute(delete(Inspection).where(Inspection.id.in_([int(b[0]) for b in batch])))

    # 2. files older than max_file_age_days, then 3. disk budgets (newest first, oldest deleted)
    for column, budget, kind in ((Inspection.stored_path, r.max_frame_bytes, "frames"),
                                 (Inspection.heatmap_path, r.max_heatmap_bytes, "heatmaps")):
        if r.max_file_age_days is None and budget is None:
            continue
        file_cutoff = now - timedelta(days=r.max_file_age_days) if r.max_file_age_days is not None else None
        to_clear: list[int] = []
        used = 0
        with store.engine.connect() as conn:
            result = conn.execution_options(yield_per=2000).execute(
                select(Inspection.id, column, Inspection.captured_at).where(column.is_not(None))
                .order_by(Inspection.captured_at.desc(), Inspection.id.desc()))
            for _id, path, captured in result:
                _id = int(_id)
                size = _size(path)
                if size is None:
                    report.missing_files += 1
                    to_clear.append(_id)
                    continue
                used += size
                if _id in protected:
                    continue
                too_old = file_cutoff is not None and captured < file_cutoff
                over = budget is not None and used > budget
                if too_old or over:
                    freed = _remove(path, report)
                    report.bytes_freed += freed
                    used -= size
                    if kind == "frames":
                        report.frames_deleted += 1
                    else:
                        report.heatmaps_deleted += 1
                    to_clear.append(_id)
        if not dry_run:
            for i in range(0, len(to_clear), _BATCH):
                with store.engine.begin() as conn:
                    conn.execute(update(Inspection).where(Inspection.id.in_(to_clear[i:i + _BATCH]))
                                 .values({column.key: None}))
    log.info("retention: %s", report.summary())
    return report
