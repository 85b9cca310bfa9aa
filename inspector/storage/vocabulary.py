"""The names the read commands offer as choices and columns, without SQLAlchemy: parsing a
command's arguments (and rejecting a typo) imports only this."""
from __future__ import annotations

VERDICTS = ("pass", "fail", "error")

# Columns of a history listing, in output order (CSV header = these names).
HISTORY_COLUMNS = (
    "id", "captured_at", "source", "origin_name", "verdict", "score", "threshold", "region_count",
    "bundle_id", "error_reason", "total_ms", "image_w", "image_h", "heatmap_path", "stored_path",
    "frame_key", "recorded_at",
)

GROUP_BYS: tuple[str, ...] = ("hour", "day", "shift", "source", "bundle")
STATS_COLUMNS = ("key", "total", "passed", "failed", "errors", "yield_pct", "p50", "p95", "p99")
