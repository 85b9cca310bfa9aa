"""The stored fields as the read commands name and print them, without SQLAlchemy: parsing a
command's arguments (and rejecting a typo) imports only this, and a CSV of millions of rows
formats its cells with plain functions."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

VERDICTS = ("pass", "fail", "error")

# Columns of a history listing, in output order (CSV header = these names).
HISTORY_COLUMNS = (
    "id", "captured_at", "source", "origin_name", "verdict", "score", "threshold", "region_count",
    "bundle_id", "error_reason", "total_ms", "image_w", "image_h", "heatmap_path", "stored_path",
    "frame_key", "recorded_at",
)

GROUP_BYS: tuple[str, ...] = ("hour", "day", "shift", "source", "bundle")
STATS_COLUMNS = ("key", "total", "passed", "failed", "errors", "yield_pct", "p50", "p95", "p99")


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    return value


def iso_utc(dt: Optional[datetime]) -> Optional[str]:
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
