"""Write a self-contained HTML report of a period (default: the last 24 h): yield over time,
fail counts per source, score percentiles, and the top fails with heatmap thumbnails. Charts are
inline SVG and pictures are embedded (base64), so the file can be mailed or archived as is."""
from __future__ import annotations

import argparse
import base64
import os
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from inspector.commands.history import add_filter_arguments, filter_from_args
from inspector.commands.stats import shifts_from_settings, zone_from
from inspector.errors import InspectorError
from inspector.names import display_text
from inspector.storage.locate import add_db_arguments, load_config, open_store

if TYPE_CHECKING:
    from inspector.storage.queries import HistoryFilter

# numpy and SQLAlchemy (charts, queries, stats) are imported only when the report is built, so a
# mistyped option is answered at once.

_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}
td:first-child,th:first-child{text-align:left}
.fails figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top;font-size:12px}
.fails img{max-width:220px;max-height:220px;display:block;border:1px solid #ccc}figcaption{margin-top:4px}
.noimg{width:128px;height:96px;display:flex;align-items:center;justify-content:center;background:#f4f4f4;
color:#777;border:1px dashed #bbb}"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_db_arguments(parser)
    add_filter_arguments(parser)
    parser.set_defaults(since="24h")
    parser.add_argument("--out", required=True, type=Path, metavar="report.html")
    parser.add_argument("--by", choices=("hour", "day", "shift"), default="hour", help="time buckets of the yield chart")
    parser.add_argument("--top", type=int, default=12, help="how many of the highest-scoring fails to show")
    parser.add_argument("--tz", metavar="ZONE", help="IANA time zone for the time buckets")


def thumbnail_data_uri(path: Optional[str], max_side: int = 220) -> Optional[str]:
    """A small PNG of the image at ``path`` as a data: URI, or None when it cannot be read."""
    if not path or not os.path.isfile(path):
        return None
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s < 1.0:
        img = cv2.resize(img, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", img)
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


def _table(rows) -> str:
    head = "<tr><th>" + "</th><th>".join(("group", "total", "pass", "fail", "error", "yield %", "p50", "p95",
                                           "p99")) + "</th></tr>"

    def f(v):
        return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    body = "".join("<tr>" + "".join(f"<td>{escape(display_text(f(v)))}</td>" for v in (
        r.key, r.total, r.passed, r.failed, r.errors, None if r.yield_pct is None else round(r.yield_pct, 2),
        r.p50, r.p95, r.p99)) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def build_report(store, flt: HistoryFilter, *, by: str, shifts, tz, top: int, title: str) -> str:
    from inspector.storage.charts import bar_chart, line_chart
    from inspector.storage.queries import HistoryFilter, iso_utc, iter_history
    from inspector.storage.stats import TOTAL_KEY, compute_stats

    time_rows = compute_stats(store, by, flt, shifts=shifts, tz=tz)
    buckets = [r for r in time_rows if r.key != TOTAL_KEY]
    total = time_rows[-1]
    src_rows = [r for r in compute_stats(store, "source", flt) if r.key != TOTAL_KEY]
    fails = list(iter_history(store, HistoryFilter(**{**flt.__dict__, "verdict": "fail"}), limit=top,
                              highest_score_first=True))
    yield_svg = line_chart([r.key for r in buckets], [r.yield_pct for r in buckets],
                           title=f"yield % per {by}", y_min=min([r.yield_pct for r in buckets
                                                                 if r.yield_pct is not None] + [90.0]) // 1)
    fail_svg = bar_chart([r.key for r in src_rows], [r.failed for r in src_rows], title="fails per source")
    cards = []
    for r in fails:
        uri = thumbnail_data_uri(r["heatmap_path"]) or thumbnail_data_uri(r["stored_path"])
        img = f'<img src="{uri}" alt="heatmap {r["id"]}">' if uri else '<div class="noimg">(no heatmap on disk)</div>'
        cards.append(f'<figure>{img}<figcaption>#{r["id"]} {escape(display_text(r["source"]))} '
                     f'{escape(display_text(r["origin_name"] or ""))}'
                     f'<br>score {r["score"]:.4g} at {escape(iso_utc(r["captured_at"]) or "")}</figcaption></figure>')
    period = f"{iso_utc(flt.since) or 'start'} to {iso_utc(flt.until) or 'now'}"
    yield_txt = "-" if total.yield_pct is None else f"{total.yield_pct:.2f} %"
    from inspector.commands.stats import review_line
    from inspector.storage.reviews import review_summary

    reviewed = review_line(review_summary(store, flt, verdict_counts=(total.passed, total.failed)))
    reviewed_html = f'<p id="reviews">{escape(reviewed[0].upper() + reviewed[1:])}.</p>' if reviewed else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1>
<p>Period (UTC): {escape(period)}. Written {escape(iso_utc(datetime.now(timezone.utc)) or '')}.</p>
<p><b>{total.total}</b> inspections: {total.passed} pass, {total.failed} fail, {total.errors} error;
yield <b>{yield_txt}</b>.</p>
{reviewed_html}
<h2>Yield over time</h2>{yield_svg}
<h2>Fails per source</h2>{fail_svg}
{_table(src_rows)}
<h2>Per {escape(by)}</h2>{_table(time_rows)}
<h2>Top fails</h2><div class="fails">{''.join(cards) or '<p>none</p>'}</div>
</body></html>
"""


def run(args: argparse.Namespace) -> int:
    from inspector.storage.queries import HistoryFilter, parse_when

    settings = load_config(args)
    flt = filter_from_args(args)
    if flt.since is None:
        flt = HistoryFilter(**{**flt.__dict__, "since": parse_when("24h")})
    store = open_store(args, read_only=True, settings=settings)
    try:
        html = build_report(store, flt, by=args.by, shifts=shifts_from_settings(settings),
                            tz=zone_from(args, settings), top=args.top, title="Inspection report")
    finally:
        store.close()
    if args.out.parent and not args.out.parent.exists():
        raise InspectorError(f"--out {args.out}: folder {args.out.parent} does not exist")
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(args.out)
    print(f"wrote {args.out}")
    return 0
