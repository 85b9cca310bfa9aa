"""Apply the retention limits (config section ``retention``) once: delete old rows, old frame and
heatmap files, and the oldest files over the disk budgets. The newest ``keep_newest_fails`` fails
are never touched. ``--dry-run`` reports what would go without deleting anything."""
from __future__ import annotations

import argparse

from inspector.errors import InspectorError
from inspector.storage.locate import add_db_arguments, load_config, open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_arguments(parser)
    parser.add_argument("--dry-run", action="store_true", help="say what would be deleted; delete nothing")
    g = parser.add_argument_group("limits (override the config's retention section)")
    g.add_argument("--max-age-days", type=float)
    g.add_argument("--max-file-age-days", type=float)
    g.add_argument("--max-frame-bytes", help="e.g. 20GiB")
    g.add_argument("--max-heatmap-bytes", help="e.g. 2GB")
    g.add_argument("--keep-newest-fails", type=int)


def run(args: argparse.Namespace) -> int:
    from inspector.retention import prune  # SQLAlchemy and pydantic: only once it runs
    from inspector.settings import RetentionConfig

    settings = load_config(args)
    base = settings.retention if settings is not None else RetentionConfig()
    overrides = {k: getattr(args, k) for k in ("max_age_days", "max_file_age_days", "max_frame_bytes",
                                                "max_heatmap_bytes", "keep_newest_fails")
                 if getattr(args, k) is not None}
    try:
        retention = RetentionConfig(**{**base.model_dump(), **overrides})
    except ValueError as exc:
        raise InspectorError(f"retention limits: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}") from None
    if all(getattr(retention, k) is None for k in ("max_age_days", "max_file_age_days", "max_frame_bytes",
                                                   "max_heatmap_bytes")):
        raise InspectorError("no retention limit set; give --max-age-days/--max-frame-bytes/... or a config "
                             "with a retention section")
    store = open_store(args, read_only=False, settings=settings)
    try:
        report = prune(store, retention, dry_run=args.dry_run)
    finally:
        store.close()
    print(report.summary())
    for err in report.errors[:20]:
        print(f"  could not delete {err}")
    return 1 if report.errors else 0
