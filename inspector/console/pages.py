"""History (filters of `inspector history`, keyset pages, CSV), one inspection (frame, heatmap,
regions, all fields, neighbours, reviews), posting a review, and the yield page (the charts of
`inspector stats` / `report`)."""
from __future__ import annotations

import itertools
import io
import time
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import urlencode

from markupsafe import Markup
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from inspector.console import queries
from inspector.console.app import Console, current_user, message, read_form, render, same_origin
from inspector.console.auth import SESSION_COOKIE
from inspector.errors import InspectorError
from inspector.storage.fields import VERDICTS
from inspector.storage.queries import HistoryFilter, get_inspection, parse_when
from inspector.storage.reviews import latest_reviews, record_review, review_summary, reviews_of

FILTER_FIELDS = ("since", "until", "verdict", "source", "bundle", "min_score", "region_area_min", "review")
PAGE_SIZE = 50


def filter_from_query(params) -> tuple[HistoryFilter, dict[str, str]]:
    """The history filter from query parameters (the options of `inspector history`) and the
    parameters as given (to keep them in links). Raises InspectorError on a bad value."""
    given = {k: params.get(k, "").strip() for k in FILTER_FIELDS if params.get(k, "").strip()}

    def num(key, kind):
        if key not in given:
            return None
        try:
            value = kind(given[key])
        except ValueError:
            raise InspectorError(f"{key} {given[key]!r} is not a number") from None
        if not -1e15 < value < 1e15:  # beyond what a database integer holds; nan is refused too
            raise InspectorError(f"{key} {given[key]!r} is out of range")
        return value

    if given.get("review") not in (None,) + queries.REVIEW_FILTERS:
        raise InspectorError(f"review must be one of {', '.join(queries.REVIEW_FILTERS)}")
    verdict = given.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise InspectorError(f"verdict must be one of {', '.join(VERDICTS)}")
    flt = HistoryFilter(since=parse_when(given["since"]) if "since" in given else None,
                        until=parse_when(given["until"]) if "until" in given else None,
                        verdict=verdict, source=given.get("source"), bundle_id=given.get("bundle"),
                        min_score=num("min_score", float), region_area_min=num("region_area_min", int))
    return flt, given


def history(request: Request):
    c: Console = request.app.state.console
    try:
        flt, given = filter_from_query(request.query_params)
    except InspectorError as exc:
        return message(request, str(exc), 400)
    after = queries.Cursor.decode(request.query_params.get("after"))
    before = None if after else queries.Cursor.decode(request.query_params.get("before"))
    result = queries.page(c.reader, flt, after=after, before=before, size=PAGE_SIZE, review=given.get("review"))
    reviews = latest_reviews(c.reader, [r["id"] for r in result["rows"]])
    qs = urlencode(given)

    def link(key, cur):
        return f"/history?{urlencode({**given, key: cur.encode()})}" if cur else None

    return render(request, "history.html", rows=result["rows"], reviews=reviews, given=given, verdicts=VERDICTS,
                  review_filters=queries.REVIEW_FILTERS, sources=queries.sources(c.reader),
                  older=link("after", result["older"]), newer=link("before", result["newer"]),
                  csv_link=f"/history.csv?{qs}" if qs else "/history.csv")


def history_csv(request: Request):
    """Every matching row as CSV, streamed a keyset page a chunk (cells as `inspector history
    --format csv`); each page is its own short read (queries.iter_rows)."""
    from inspector.commands.history import write_csv

    c: Console = request.app.state.console
    try:
        flt, given = filter_from_query(request.query_params)
    except InspectorError as exc:
        return Response(str(exc), status_code=400, media_type="text/plain")

    def chunks():
        # one keyset page a chunk: no database read is open while the client takes a chunk
        page = queries.EXPORT_PAGE
        rows = iter(queries.iter_rows(c.reader, flt, given.get("review"), chunk=page))
        header = True
        while True:  # history's CSV writer
            buf = io.StringIO()
            n = write_csv(itertools.islice(rows, page), buf, header=header)
            yield buf.getvalue()
            header = False
            if n < page:
                return

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="inspections-{stamp}.csv"'})


def detail(request: Request):
    c: Console = request.app.state.console
    row = get_inspection(c.reader, request.path_params["id"])
    if row is None:
        return message(request, f"no inspection #{request.path_params['id']}", 404)
    fields = [(k, row[k]) for k in row if k not in ("regions",)]
    return render(request, "detail.html", row=row, fields=fields, regions=row["regions"],
                  near=queries.neighbours(c.reader, row), reviews=reviews_of(c.reader, row["id"]),
                  has_frame=c.media.resolve(row.get("stored_path")) is not None,
                  has_heatmap=c.media.resolve(row.get("heatmap_path")) is not None,
                  error=request.query_params.get("error"))


async def review(request: Request):
    """Record a review: only a logged-in user, with the page's CSRF token, from this console."""
    c: Console = request.app.state.console
    user = current_user(request)
    if user is None:
        return message(request, "refused: reviews need a login (the console is read-only without one)", 403)
    if not same_origin(request):
        return message(request, "refused: the form was not sent from this console", 403)
    form = await read_form(request)
    if not c.auth.csrf_ok(user, request.cookies.get(SESSION_COOKIE), form.get("csrf")):
        return message(request, "refused: missing or wrong form token; reload the page and try again", 403)
    iid = request.path_params["id"]
    try:
        await run_in_threadpool(record_review, c.writer(), iid, form.get("kind", ""), reviewer=user,
                                defect_type=form.get("defect_type"), note=form.get("note"))
    except InspectorError as exc:
        return message(request, str(exc), 400)
    return RedirectResponse(f"/inspection/{iid}#reviews", status_code=303)


def _yield_filter(request: Request) -> tuple[HistoryFilter, dict[str, str]]:
    flt, given = filter_from_query(request.query_params)
    if flt.since is None:
        given["since"] = "24h"
        flt = HistoryFilter(**{**flt.__dict__, "since": parse_when("24h")})
    return flt, given


YIELD_CACHE_S = 30.0  # a yield page is an aggregate: the same query within this is served again


def _cached(c: Console, key: tuple, build: Callable[[], Any]) -> Any:
    """``build()``, or what it gave this console for the same key less than YIELD_CACHE_S ago."""
    hit = c.cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < YIELD_CACHE_S:
        return hit[1]
    value = build()
    if len(c.cache) > 64:
        c.cache.clear()
    c.cache[key] = (time.monotonic(), value)
    return value


def _yield_context(c: Console, flt: HistoryFilter, given: dict[str, str], by: str) -> dict:
    """Counts only (no percentiles): the yield per bucket from index range counts, the fails per
    source from queries.source_counts, the review summary on the same totals."""
    # as asked: "24h" is the same page for 30 s
    return _cached(c, ("page", tuple(sorted(given.items())), by), lambda: _yield_page_data(c, flt, by))


def _yield_page_data(c: Console, flt: HistoryFilter, by: str) -> dict:
    from inspector.storage.charts import bar_chart, line_chart
    from inspector.storage.stats import TOTAL_KEY, compute_stats

    time_rows = compute_stats(c.reader, by, flt, shifts=c.shifts, tz=c.tz or timezone.utc, percentiles=False)
    buckets = [r for r in time_rows if r.key != TOTAL_KEY]
    total = time_rows[-1]
    src_rows = queries.source_counts(c.reader, flt)
    lows = [r.yield_pct for r in buckets if r.yield_pct is not None]
    yield_svg = line_chart([r.key for r in buckets], [r.yield_pct for r in buckets], title=f"yield % per {by}",
                           y_min=min(lows + [90.0]) // 1, width=440)
    fail_svg = bar_chart([r.key for r in src_rows], [r.failed for r in src_rows], title="fails per source",
                         width=440)
    ctx = {"total": total, "buckets": buckets, "src_rows": src_rows,
           # built by inspector.storage.charts, which escapes every label itself
           "yield_svg": Markup(yield_svg), "fail_svg": Markup(fail_svg),
           "reviews": review_summary(c.reader, flt, verdict_counts=(total.passed, total.failed))}
    return ctx


def yield_page(request: Request):
    c: Console = request.app.state.console
    by = request.query_params.get("by", "hour")
    bys = ("hour", "day") + (("shift",) if c.shifts else ())
    if by not in bys:
        return message(request, f"by must be one of {', '.join(bys)}", 400)
    try:
        flt, given = _yield_filter(request)
    except InspectorError as exc:
        return message(request, str(exc), 400)
    return render(request, "yield.html", by=by, bys=bys, given=given, **_yield_context(c, flt, given, by),
                  density_link=f"/yield/density.png?{urlencode(given)}", sources=queries.sources(c.reader))


def density_png(request: Request):
    import cv2

    from inspector.commands.stats import density_picture

    c: Console = request.app.state.console
    try:
        flt, given = _yield_filter(request)
    except InspectorError as exc:
        return Response(str(exc), status_code=400, media_type="text/plain")
    def build() -> bytes:
        picture, _n = density_picture(c.reader, flt, size=(384, 384))
        return cv2.imencode(".png", picture)[1].tobytes()

    png = _cached(c, ("density", tuple(sorted(given.items()))), build)  # the same 30 s as its page
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


