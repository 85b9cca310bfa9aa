"""Export a period for offline analysis: ``DIR/inspections.csv``, ``DIR/regions.csv`` and, for
fails, copies of their heatmaps and stored frames under ``DIR/fails/`` (named ``<id>-<file>``).
Streams rows; opens the database read-only. Filters as for `inspector history`."""
from __future__ import annotations

import argparse
import csv
import os
import shutil
from pathlib import Path

from inspector.commands.history import add_filter_arguments, csv_cell, filter_from_args, write_csv
from inspector.errors import InspectorError
from inspector.storage.locate import add_db_arguments, open_store
from inspector.storage.fields import HISTORY_COLUMNS

REGION_COLUMNS = ("id", "inspection_id", "x", "y", "w", "h", "area", "peak_score", "image_w", "image_h",
                  "captured_at", "source")


def copy_for_export(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` with its times but a new file's mode (the umask's, as for anything
    handed to someone else), not the source's: shutil.copy2 would carry a 0600 over."""
    shutil.copyfile(src, dst)
    st = os.stat(src)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_arguments(parser)
    add_filter_arguments(parser)
    parser.add_argument("--to", required=True, type=Path, metavar="DIR", help="output folder (created)")
    parser.add_argument("--no-files", action="store_true", help="only the CSV files, no heatmap/frame copies")


def run(args: argparse.Namespace) -> int:
    from inspector.storage.queries import iter_history, iter_regions  # SQLAlchemy: only once it runs

    out: Path = args.to
    if out.exists() and any(out.iterdir()):
        raise InspectorError(f"--to {out}: folder is not empty; pick a new one")
    out.mkdir(parents=True, exist_ok=True)
    flt = filter_from_args(args)
    store = open_store(args, read_only=True)
    copied = missing = 0
    try:
        fails_dir = out / "fails"
        with open(out / "inspections.csv", "w", newline="", encoding="utf-8") as f:
            n_rows = write_csv(iter_history(store, flt, oldest_first=True), f, HISTORY_COLUMNS)
        with open(out / "regions.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(REGION_COLUMNS)
            n_regions = 0
            for r in iter_regions(store, flt):
                w.writerow([csv_cell(r[c]) for c in REGION_COLUMNS])
                n_regions += 1
        if not args.no_files:
            fail_flt = flt.__class__(**{**flt.__dict__, "verdict": "fail"}) if flt.verdict in (None, "fail") else None
            if fail_flt is not None:
                for row in iter_history(store, fail_flt, oldest_first=True):
                    for key in ("heatmap_path", "stored_path"):
                        src = row[key]
                        if not src:
                            continue
                        p = Path(src)
                        if not p.is_file():
                            missing += 1
                            continue
                        fails_dir.mkdir(exist_ok=True)
                        copy_for_export(p, fails_dir / f"{row['id']}-{p.name}")
                        copied += 1
    finally:
        store.close()
    print(f"exported {n_rows} inspections, {n_regions} regions, {copied} files to {out}"
          + (f" ({missing} files listed but missing, e.g. pruned)" if missing else ""))
    return 0
