"""Counts, yield and score percentiles per hour, day, shift, source or bundle. Read-only.

Yield % = pass / (pass + fail) (errors are counted apart). Score percentiles p50/p95/p99 are
over scored frames. Hours, days and shifts are in the config's ``timezone`` (UTC without
--config; --tz overrides). ``--heatmap OUT.png`` also draws where the fail regions of the period
were, as a density picture over an optional ``--outline`` golden image.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from datetime import time, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Optional, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from inspector.errors import InspectorError
from inspector.storage.locate import add_db_arguments, load_config, open_store
from inspector.storage.fields import GROUP_BYS, STATS_COLUMNS
from inspector.commands.history import add_filter_arguments, csv_cell, filter_from_args
from inspector.names import display_text

if TYPE_CHECKING:
    import numpy as np

    from inspector.storage.queries import HistoryFilter
    from inspector.storage.stats import Shift, StatsRow

# numpy and SQLAlchemy (inspector.storage.stats/queries) are imported only when the command runs,
# so a mistyped option is answered at once.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_arguments(parser)
    parser.add_argument("--by", choices=GROUP_BYS, default="hour")
    add_filter_arguments(parser)
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--tz", metavar="ZONE", help="IANA time zone for hour/day/shift buckets "
                        "(default: the config's timezone, else UTC)")
    parser.add_argument("--heatmap", metavar="OUT.png", type=Path,
                        help="also write a density picture of the fail regions' boxes")
    parser.add_argument("--outline", metavar="IMAGE", type=Path,
                        help="draw the density over this image (e.g. a golden part)")


def shifts_from_settings(settings) -> tuple[Shift, ...]:
    from inspector.storage.stats import Shift

    if settings is None:
        return ()
    out = []
    for s in settings.shifts:
        h1, m1 = (int(x) for x in s.start.split(":"))
        h2, m2 = (int(x) for x in s.end.split(":"))
        out.append(Shift(s.name, time(h1, m1), time(h2, m2)))
    return tuple(out)


def zone_from(args, settings):
    name = getattr(args, "tz", None) or (settings.timezone if settings is not None else "UTC")
    if name == "UTC":
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InspectorError(f"time zone {name!r} is not known; use an IANA name such as Europe/Berlin") from None


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_rows(rows: Sequence[StatsRow], fmt: str, out: IO[str]) -> None:
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(STATS_COLUMNS)
        for r in rows:
            w.writerow([csv_cell(v) for v in (r.as_dict()[c] for c in STATS_COLUMNS)])
        return
    if fmt == "json":
        json.dump([r.as_dict() for r in rows], out, indent=1)
        out.write("\n")
        return
    header = ("key", "total", "pass", "fail", "error", "yield%", "p50", "p95", "p99")
    cells = [[display_text(str(r.key)), str(r.total), str(r.passed), str(r.failed), str(r.errors),
              "-" if r.yield_pct is None else f"{r.yield_pct:.2f}", _fmt(r.p50), _fmt(r.p95), _fmt(r.p99)]
             for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    out.write("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))) + "\n")
    for c in cells:
        out.write("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))) + "\n")


def review_line(summary) -> Optional[str]:
    """One line on the operators' reviews of the period (console), or None when there are none."""
    if not (summary.confirmed_defects or summary.false_rejects or summary.missed_defects):
        return None

    def pct(v):
        return "-" if v is None else f"{v:.2f}%"

    return (f"reviews: {summary.confirmed_defects} confirmed defects, {summary.false_rejects} false rejects, "
            f"{summary.missed_defects} missed defects; confirmed yield {pct(summary.confirmed_yield_pct)}, "
            f"false rejects {pct(summary.false_reject_pct_of_reviewed)} of reviewed fails")


def write_review_line(store, flt: HistoryFilter, total: StatsRow, out: IO[str]) -> None:
    from inspector.storage.reviews import review_summary

    line = review_line(review_summary(store, flt, verdict_counts=(total.passed, total.failed)))
    if line:
        out.write(line + "\n")


def region_density(regions, *, size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Accumulate region boxes, normalised by each frame's size, on a float32 [h, w] canvas
    (``size`` = (w, h)). Regions of frames without a recorded size are skipped; returns the
    canvas and how many boxes were drawn."""
    import numpy as np

    cw, ch = size
    acc = np.zeros((ch, cw), np.float32)
    n = 0
    for r in regions:
        iw, ih = r["image_w"], r["image_h"]
        if not iw or not ih:
            continue
        x0 = int(np.floor(r["x"] / iw * cw))
        y0 = int(np.floor(r["y"] / ih * ch))
        x1 = max(x0 + 1, int(np.ceil((r["x"] + r["w"]) / iw * cw)))
        y1 = max(y0 + 1, int(np.ceil((r["y"] + r["h"]) / ih * ch)))
        acc[max(y0, 0):min(y1, ch), max(x0, 0):min(x1, cw)] += 1.0
        n += 1
    return acc, n


def density_picture(store, flt: HistoryFilter, outline: Optional[Path] = None,
                    size: tuple[int, int] = (512, 512)) -> tuple[np.ndarray, int]:
    """Where the fail regions of ``flt``'s period were: a BGR picture (blurred box density in
    colour, over ``outline`` when given) and how many regions were drawn. Used by --heatmap and
    by the console's yield page."""
    import cv2  # commands may use OpenCV; storage never does
    import numpy as np

    from inspector.storage.queries import HistoryFilter, iter_regions

    base = None
    if outline is not None:
        base = cv2.imread(str(outline), cv2.IMREAD_COLOR)
        if base is None:
            raise InspectorError(f"--outline {outline}: not a readable image")
    fail_flt = HistoryFilter(**{**flt.__dict__, "verdict": "fail"})
    if base is not None:
        h, w = base.shape[:2]
    else:
        w, h = size
    acc, n = region_density(iter_regions(store, fail_flt), size=(w, h))
    if acc.max() > 0:
        acc = cv2.GaussianBlur(acc, (0, 0), sigmaX=max(1.0, w / 200))
        norm = (255 * acc / acc.max()).astype(np.uint8)
    else:
        norm = np.zeros((h, w), np.uint8)
    colour = cv2.applyColorMap(norm, cv2.COLORMAP_JET)
    if base is not None:
        alpha = (norm.astype(np.float32) / 255.0 * 0.7)[..., None]
        colour = (base * (1 - alpha) + colour * alpha).astype(np.uint8)
    return colour, n


def write_density_png(store, flt: HistoryFilter, out_png: Path, outline: Optional[Path]) -> int:
    import cv2

    colour, n = density_picture(store, flt, outline)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(out_png.name + ".tmp.png")
    if not cv2.imwrite(str(tmp), colour):
        raise InspectorError(f"--heatmap {out_png}: could not write")
    tmp.replace(out_png)
    return n


def run(args: argparse.Namespace, out: Optional[IO[str]] = None) -> int:
    from inspector.storage.stats import compute_stats

    out = out or sys.stdout
    settings = load_config(args)
    tz = zone_from(args, settings)
    flt = filter_from_args(args)
    store = open_store(args, read_only=True, settings=settings)
    try:
        rows = compute_stats(store, args.by, flt, shifts=shifts_from_settings(settings), tz=tz)
        write_rows(rows, args.format, out)
        if args.format == "table":
            write_review_line(store, flt, rows[-1], out)
        if args.heatmap is not None:
            n = write_density_png(store, flt, args.heatmap, args.outline)
            print(f"wrote {args.heatmap} ({n} fail regions)", file=sys.stderr)
    finally:
        store.close()
    return 0
