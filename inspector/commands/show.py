"""Print one inspection: every recorded field, its defect regions and its heatmap path.
Opens the database read-only. ``--format json`` prints one JSON object."""
from __future__ import annotations

import argparse
import json
import sys
from typing import IO, Optional

from inspector.errors import InspectorError
from inspector.names import display_text
from inspector.storage.locate import add_db_arguments, open_store


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", type=int, help="inspection id (the first column of `inspector history`)")
    add_db_arguments(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace, out: Optional[IO[str]] = None) -> int:
    from inspector.storage.queries import get_inspection, to_jsonable  # SQLAlchemy: only once it runs

    out = out or sys.stdout
    store = open_store(args, read_only=True)
    try:
        rec = get_inspection(store, args.id)
    finally:
        store.close()
    if rec is None:
        raise InspectorError(f"no inspection with id {args.id}; list ids with `inspector history`")
    if args.format == "json":
        out.write(json.dumps({k: to_jsonable(v) for k, v in rec.items()}, indent=2) + "\n")
        return 0
    regions = rec.pop("regions")
    width = max(len(k) for k in rec)
    for k, v in rec.items():  # stored text as it was recorded, shown with its control characters escaped
        out.write(f"{k.ljust(width)}  {'' if v is None else display_text(str(to_jsonable(v)))}\n")
    out.write(f"\n{len(regions)} defect region(s) (original pixels)\n")
    if regions:
        out.write("  #      x      y      w      h     area  peak_score\n")
        for i, r in enumerate(regions, 1):
            out.write(f"  {i:<3}{r['x']:>6} {r['y']:>6} {r['w']:>6} {r['h']:>6} {r['area']:>8}  "
                      f"{r['peak_score']:.4g}\n")
    return 0
