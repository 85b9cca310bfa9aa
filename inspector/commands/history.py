"""List past inspections, newest first, with filters. Opens the database read-only.

Output formats: ``table`` (default limit 50), ``csv`` (header row), ``json`` (one JSON array,
streamed element by element), ``jsonl`` (JSON Lines: one object per line). CSV and JSON stream
rows from the database in chunks, so any number of rows takes the same memory. Times are UTC.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import IO, TYPE_CHECKING, Iterable, Optional

from inspector.names import display_text
from inspector.storage.fields import HISTORY_COLUMNS, VERDICTS, to_jsonable
from inspector.storage.locate import add_db_arguments, open_store

if TYPE_CHECKING:
    from inspector.storage.queries import HistoryFilter

# SQLAlchemy (inspector.storage.queries) is imported only when a command runs, so a mistyped
# option is answered at once.

TABLE_COLUMNS = ("id", "captured_at", "source", "origin_name", "verdict", "score", "threshold", "region_count",
                 "error_reason")


def add_filter_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("filters")
    g.add_argument("--since", metavar="WHEN", help="captured at or after: ISO time (UTC unless it has an offset) "
                   "or an age like 30m, 2h, 7d")
    g.add_argument("--until", metavar="WHEN", help="captured before: same forms as --since")
    g.add_argument("--verdict", choices=VERDICTS)
    g.add_argument("--source", help="source name exactly")
    g.add_argument("--bundle", metavar="BUNDLE_ID", help="model bundle id exactly")
    g.add_argument("--min-score", type=float, metavar="S", help="score >= S")
    g.add_argument("--region-area-min", type=int, metavar="PX", help="has a defect region of at least PX pixels")


def filter_from_args(args: argparse.Namespace) -> HistoryFilter:
    from inspector.storage.queries import HistoryFilter, parse_when

    since = parse_when(args.since) if getattr(args, "since", None) else None
    until = parse_when(args.until) if getattr(args, "until", None) else None
    return HistoryFilter(since=since, until=until, verdict=getattr(args, "verdict", None),
                         source=getattr(args, "source", None), bundle_id=getattr(args, "bundle", None),
                         min_score=getattr(args, "min_score", None),
                         region_area_min=getattr(args, "region_area_min", None))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_arguments(parser)
    add_filter_arguments(parser)
    parser.add_argument("--format", choices=("table", "csv", "json", "jsonl"), default="table",
                        help="table (default), csv, json (a streamed JSON array) or jsonl (JSON Lines)")
    parser.add_argument("--limit", type=int, metavar="N",
                        help="at most N rows (default 50 for table, all for csv/json/jsonl; 0 = all)")
    parser.add_argument("--offset", type=int, default=0, metavar="N", help="skip the first N rows (paging)")
    parser.add_argument("--page", type=int, metavar="P", help="page P (1-based) of --limit rows; sets --offset")
    parser.add_argument("--oldest-first", action="store_true", help="oldest first instead of newest first")


# A cell a spreadsheet would run as a formula starts with one of these (OWASP, "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return display_text(str(to_jsonable(v)))


def csv_cell(v):
    """One CSV cell: numbers as they are; text with its control characters escaped (names are
    shown, not interpreted) and, when it would start a formula, prefixed with ``'`` as
    spreadsheets expect."""
    if v is None:
        return ""
    v = to_jsonable(v)
    if not isinstance(v, str):
        return v
    v = display_text(v)
    return "'" + v if v.startswith(FORMULA_STARTS) else v


def write_table(rows: Iterable[dict], out: IO[str]) -> int:
    rows = list(rows)  # bounded by --limit
    cells = [[_fmt(r[c]) for c in TABLE_COLUMNS] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(TABLE_COLUMNS)]
    widths[-1] = min(widths[-1], 40)
    out.write("  ".join(c.ljust(w) for c, w in zip(TABLE_COLUMNS, widths)).rstrip() + "\n")
    for row in cells:
        out.write("  ".join(v[:w].ljust(w) for v, w in zip(row, widths)).rstrip() + "\n")
    return len(rows)


def write_csv(rows: Iterable[dict], out: IO[str], columns=HISTORY_COLUMNS, *, header: bool = True) -> int:
    w = csv.writer(out, lineterminator="\n")
    if header:
        w.writerow(columns)
    n = 0
    for r in rows:
        w.writerow([csv_cell(r[c]) for c in columns])
        n += 1
    return n


def write_json(rows: Iterable[dict], out: IO[str], *, lines: bool) -> int:
    n = 0
    if not lines:
        out.write("[")
    for r in rows:
        text = json.dumps({k: to_jsonable(v) for k, v in r.items()}, separators=(",", ":"))
        if lines:
            out.write(text + "\n")
        else:
            out.write(("\n" if n == 0 else ",\n") + text)
        n += 1
    if not lines:
        out.write("\n]\n")
    return n


def run(args: argparse.Namespace, out: Optional[IO[str]] = None) -> int:
    out = out or sys.stdout
    flt = filter_from_args(args)
    limit: Optional[int] = args.limit
    if limit is None:
        limit = 50 if args.format == "table" else None
    elif limit == 0:
        limit = None
    offset = args.offset
    if args.page is not None:
        if not limit:
            from inspector.errors import InspectorError

            raise InspectorError("--page needs a --limit greater than 0")
        offset = (max(args.page, 1) - 1) * limit
    from inspector.storage.queries import iter_history

    store = open_store(args, read_only=True)
    try:
        rows = iter_history(store, flt, limit=limit, offset=offset, oldest_first=args.oldest_first)
        if args.format == "table":
            n = write_table(rows, out)
            if n == 0:
                out.write("(no inspections match)\n")
        elif args.format == "csv":
            write_csv(rows, out)
        else:
            write_json(rows, out, lines=args.format == "jsonl")
        out.flush()
    except BrokenPipeError:  # `inspector history | head`
        return 0
    finally:
        store.close()
    return 0
