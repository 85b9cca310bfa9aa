"""The console's Starlette app: shared state, security headers, the live page and its event
stream, pictures, login. The history, detail, review and yield pages are in ``pages``.

Endpoints that touch the database are plain functions (Starlette runs them on its thread pool),
so a slow query never blocks the event stream of another browser.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from inspector.console import queries
from inspector.console.auth import SESSION_COOKIE, Auth
from inspector.console.media import IMAGE_TYPES, MediaRoots, thumbnail_png
from inspector.names import display_text
from inspector.storage.fields import iso_utc
from inspector.storage.reviews import REVIEW_KINDS, REVIEW_LABELS

HERE = Path(__file__).parent
MAX_FORM_BYTES = 16 * 1024
# scripts only from our own /static; inline styles are allowed (charts), nothing from elsewhere
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; "
       "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
STREAM_DOWN_STATES = ("reconnecting", "stopped", "failed", "error", "disconnected")


@dataclass
class Console:
    """What every request needs: the config, the stores, the allowed picture folders."""

    config: Any  # ConsoleConfig
    reader: Any  # ResultStore, read-only
    auth: Auth
    media: MediaRoots
    status_path: Optional[Path] = None
    shifts: tuple = ()
    tz: Any = None
    writer_factory: Any = None  # () -> writable ResultStore, for reviews
    events_max_s: float = 300.0  # an event stream ends after this; the browser reconnects
    _writer: Any = field(default=None, repr=False)
    _probe_lock: Any = field(default_factory=threading.Lock, repr=False)
    _probe_at: float = field(default=0.0, repr=False)
    _probe_value: Any = field(default=None, repr=False)
    cache: dict = field(default_factory=dict, repr=False)  # the yield pages' (pages.py), per console

    def writer(self):
        if self._writer is None:
            self._writer = self.writer_factory()
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _fmt_score(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(str(HERE / "templates")),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters["name"] = lambda v: "" if v is None else display_text(str(v))
    env.filters["when"] = lambda v: (iso_utc(v) or "").replace("T", " ")
    env.filters["score"] = _fmt_score
    env.globals["review_labels"] = REVIEW_LABELS
    env.globals["review_kinds"] = REVIEW_KINDS
    return env


ENV = _env()


def render(request: Request, template: str, status_code: int = 200, **ctx) -> HTMLResponse:
    c: Console = request.app.state.console
    user = current_user(request)
    csrf = c.auth.csrf_token(user, request.cookies.get(SESSION_COOKIE)) if user else None
    html = ENV.get_template(template).render(request=request, user=user, csrf=csrf, title=c.config.title,
                                             login_configured=c.auth.enabled, has_users=bool(c.config.users),
                                             **ctx)
    return HTMLResponse(html, status_code=status_code)


def current_user(request: Request) -> Optional[str]:
    c: Console = request.app.state.console
    return c.auth.user(request.headers, request.cookies, request.client.host if request.client else None)


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form body (small: reviews, logins), first value per field."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items()}


def same_origin(request: Request) -> bool:
    """A POST whose Origin (when the browser sends one) is this console."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def message(request: Request, text: str, status_code: int) -> HTMLResponse:
    return render(request, "message.html", status_code=status_code, text=text)


# ---------------------------------------------------------------- daemon health (the banner)

def health(c: Console) -> dict[str, Any]:
    """Problems to show in the banner, from the daemon's status file (as `inspector status`)."""
    if c.status_path is None:
        return {"problems": [], "status": None}
    from inspector.commands.status import read_daemon_status

    st = read_daemon_status(c.status_path)
    problems = []
    if st.get("error"):
        problems.append(f"daemon: {st['error']}")
    elif not st.get("running"):
        problems.append("daemon: not running")
    if st.get("running") and st.get("stalled"):
        problems.append(f"daemon stalled: {st['stalled']}")
    streams = st.get("streams") if isinstance(st.get("streams"), dict) else {}
    if st.get("running"):
        for name, s in streams.items():
            state = s.get("state") if isinstance(s, dict) else None
            if state in STREAM_DOWN_STATES:
                problems.append(f"source {name} is down ({state})")
    return {"problems": problems, "status": st}


# ---------------------------------------------------------------- live

def _live_context(c: Console) -> dict[str, Any]:
    return {"groups": queries.latest_per_source(c.reader), "health": health(c), "max_id": queries.max_id(c.reader)}


def live(request: Request):
    return render(request, "live.html", **_live_context(request.app.state.console))


def live_fragment(request: Request):
    return render(request, "live_cards.html", **_live_context(request.app.state.console))


def latest_state(c: Console) -> tuple:
    """(newest verdict id, banner problems), read at most once per ~poll interval however many
    browsers have the live page open: every event stream asks, one query answers them all."""
    with c._probe_lock:
        now = time.monotonic()
        if c._probe_value is None or now - c._probe_at >= 0.9 * c.config.poll_seconds:
            c._probe_value = (queries.max_id(c.reader), health(c)["problems"])
            c._probe_at = now
        return c._probe_value


async def events(request: Request):
    """Server-sent events: ``update`` whenever a verdict is recorded or the banner changes."""
    c: Console = request.app.state.console

    def probe():
        return latest_state(c)

    async def stream():
        last, started, quiet = None, time.monotonic(), 0.0
        yield "retry: 2000\n\n"
        while time.monotonic() - started < c.events_max_s:
            if await request.is_disconnected():
                return
            mid, problems = await run_in_threadpool(probe)
            if (mid, problems) != last:
                last, quiet = (mid, problems), 0.0
                yield f"event: update\ndata: {json.dumps({'max_id': mid, 'problems': problems})}\n\n"
            elif quiet > 15:
                quiet = 0.0
                yield ": keep-alive\n\n"
            await asyncio.sleep(c.config.poll_seconds)
            quiet += c.config.poll_seconds

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# ---------------------------------------------------------------- pictures

def media(request: Request):
    c: Console = request.app.state.console
    kind = request.path_params["kind"]
    if kind not in ("frame", "heatmap"):
        return Response("not found", status_code=404)
    from inspector.storage.queries import get_inspection

    row = get_inspection(c.reader, request.path_params["id"])
    path = c.media.resolve(row.get("stored_path" if kind == "frame" else "heatmap_path") if row else None)
    if path is None:
        return Response("not found", status_code=404)
    headers = {"Cache-Control": "private, max-age=3600"}
    if request.query_params.get("thumb"):
        data = thumbnail_png(path)
        if data is None:
            return Response("not found", status_code=404)
        return Response(data, media_type="image/png", headers=headers)
    return Response(path.read_bytes(), media_type=IMAGE_TYPES[path.suffix.lower()], headers=headers)


# ---------------------------------------------------------------- login

def _safe_next(target: Optional[str]) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


async def login(request: Request):
    c: Console = request.app.state.console
    if not c.config.users:
        return message(request, "no local users are configured (console.users)", 404)
    if request.method == "GET":
        return render(request, "login.html", next=_safe_next(request.query_params.get("next")), failed=False)
    if not same_origin(request):
        return message(request, "refused: the form was not sent from this console", 403)
    form = await read_form(request)
    name, password = form.get("name", ""), form.get("password", "")
    keys = (f"name:{name}", f"addr:{request.client.host if request.client else '?'}")
    if c.auth.throttle.blocked(*keys):
        return message(request, "too many failed sign-ins; wait a quarter of an hour", 429)
    ok = await run_in_threadpool(c.auth.check_login, name, password)
    if not ok:
        c.auth.throttle.failed(*keys)
        return render(request, "login.html", status_code=401, next=_safe_next(form.get("next")), failed=True)
    resp = RedirectResponse(_safe_next(form.get("next")), status_code=303)
    resp.set_cookie(SESSION_COOKIE, c.auth.session_cookie(name), httponly=True, samesite="strict",
                    secure=request.url.scheme == "https", max_age=int(c.config.session_hours * 3600))
    return resp


async def logout(request: Request):
    c: Console = request.app.state.console
    user = current_user(request)
    form = await read_form(request)
    if user is not None and not c.auth.csrf_ok(user, request.cookies.get(SESSION_COOKIE), form.get("csrf")):
        return message(request, "refused: missing or wrong form token", 403)
    resp = RedirectResponse("/", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


# ---------------------------------------------------------------- the app

def _host_name(header: str) -> str:
    """"[::1]:8321" -> "::1", "Console.Local:80" -> "console.local"."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


class SecurityHeaders:
    """Refuses requests for another Host (400) and adds the security headers to every answer."""

    def __init__(self, app, hosts: Optional[frozenset] = None):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.hosts is not None:
            host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
            if _host_name(host) not in self.hosts:
                return await Response("invalid host header", status_code=400, media_type="text/plain")(
                    scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"x-frame-options", b"DENY"), (b"referrer-policy", b"same-origin")]
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(console: Console, listen: Optional[str] = None) -> Starlette:
    """The app; ``listen`` is where it will be served (for the default Host allowlist)."""
    from inspector.console import pages

    routes = [
        Route("/", live),
        Route("/live/cards", live_fragment),
        Route("/events", events),
        Route("/media/{kind}/{id:int}", media),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/history", pages.history),
        Route("/history.csv", pages.history_csv),
        Route("/inspection/{id:int}", pages.detail),
        Route("/inspection/{id:int}/review", pages.review, methods=["POST"]),
        Route("/yield", pages.yield_page),
        Route("/yield/density.png", pages.density_png),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        console.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    app.add_middleware(SecurityHeaders, hosts=console.config.host_allowlist(listen))
    return app


__all__ = ["Console", "create_app", "render", "current_user", "read_form", "same_origin", "message", "health"]
