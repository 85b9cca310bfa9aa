"""Is the daemon alive and what is it doing: its status file (pid, uptime, queue, streams,
engine, latency, each sink's state, backlog and last error) plus the last hour from the
database (opened read-only).

Exit status: 0 when the daemon is running and its status file is fresh, 1 when it runs but is
stalled (frames wait and nothing was committed for runtime.stall_seconds), 3 when it is not
running or its status is stale (as `systemctl status` does), 2 on a usage/config error.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Optional

from inspector.errors import InspectorError
from inspector.names import printable_name
from inspector.statusfile import status_file_path

STALE_AFTER_S = 60.0  # the daemon rewrites its status every few seconds; older means hung or gone


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from inspector.storage.locate import add_db_arguments

    add_db_arguments(parser)
    parser.add_argument("--status-file", metavar="PATH",
                        help="the daemon's status.json (default: $STATE_DIRECTORY, else next to the SQLite "
                             "database, e.g. /var/lib/inspector/status.json)")
    parser.add_argument("--window", default="1h", metavar="AGE",
                        help="how far back the database summary looks (30m, 1h, 1d; default 1h)")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def _pid_running(pid: Any) -> Optional[bool]:
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user (the service user)
        return True
    return True


def read_daemon_status(path: Path, *, now: Optional[float] = None) -> dict[str, Any]:
    """The status file plus ``running`` (pid alive), ``status_age_s`` and ``status_file``;
    ``error`` instead when it cannot be read."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {"status_file": str(path)}
    try:
        raw = path.read_text(encoding="utf-8")
        age = now - path.stat().st_mtime
    except FileNotFoundError:
        out.update(running=False, error="no status file (daemon never started here, or another --status-file)")
        return out
    except OSError as exc:
        out.update(running=None, error=f"cannot read the status file ({exc.strerror})")
        return out
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        out.update(running=None, error=f"status file is not valid JSON ({exc})")
        return out
    out.update(data)
    out["status_age_s"] = round(age, 1)
    alive = _pid_running(data.get("pid"))
    out["running"] = bool(alive) and age <= STALE_AFTER_S
    if alive and age > STALE_AFTER_S:
        out["error"] = f"process {data.get('pid')} exists but its status is {age:.0f} s old (hung?)"
    return out


def read_database_summary(args: argparse.Namespace, settings, window: timedelta) -> dict[str, Any]:
    from inspector.storage.locate import open_store
    from inspector.storage.queries import HistoryFilter, count_history, iter_history, to_jsonable

    since = datetime.now(timezone.utc) - window
    try:
        store = open_store(args, read_only=True, settings=settings)
    except InspectorError as exc:
        return {"error": str(exc)}
    try:
        counts = {v: count_history(store, HistoryFilter(since=since, verdict=v)) for v in ("pass", "fail", "error")}
        last = next(iter_history(store, HistoryFilter(), limit=1), None)
        total = count_history(store, HistoryFilter())
    except InspectorError as exc:
        return {"error": str(exc)}
    finally:
        store.close()
    n = sum(counts.values())
    return {
        "window_s": int(window.total_seconds()),
        "counts": counts,
        "inspected": n,
        "fail_rate": round(counts["fail"] / n, 4) if n else None,
        "total_inspections": total,
        "last": {k: to_jsonable(last[k]) for k in ("id", "captured_at", "source", "verdict", "score", "bundle_id")}
        if last else None,
    }


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}d " if d else "") + (f"{h}h " if d or h else "") + f"{m}m {s}s"


def _write_text(out: IO[str], daemon: dict[str, Any], db: dict[str, Any]) -> None:
    running = daemon.get("running")
    state = "running" if running else ("unknown" if running is None else "not running")
    stalled = running and daemon.get("stalled")
    if stalled:
        state = "stalled"
    out.write(f"daemon      {state}" + (f" (pid {daemon['pid']})" if daemon.get("pid") else "") + "\n")
    if daemon.get("error"):
        out.write(f"            {daemon['error']}\n")
    if stalled:
        out.write(f"            stalled: {stalled}\n")
    out.write(f"status file {daemon['status_file']}"
              + (f" (updated {daemon['status_age_s']:.0f} s ago)" if "status_age_s" in daemon else "") + "\n")
    started = daemon.get("started_at")
    if started:
        try:
            up = datetime.now(timezone.utc) - datetime.fromisoformat(str(started).replace("Z", "+00:00"))
            out.write(f"started     {started} (up {_fmt_duration(up.total_seconds())})\n")
        except ValueError:
            out.write(f"started     {started}\n")
    for key, label in (("bundle_id", "bundle"), ("engine", "engine"), ("frames_processed", "frames"),
                       ("queue_depth", "queue")):
        if daemon.get(key) is not None:
            value = daemon[key]
            if isinstance(value, dict):
                value = ", ".join(f"{k}={v}" for k, v in value.items())
            out.write(f"{label:<11} {value}\n")
    if daemon.get("latency_p50_ms") is not None or daemon.get("latency_p95_ms") is not None:
        p50, p95 = daemon.get("latency_p50_ms", "-"), daemon.get("latency_p95_ms", "-")
        out.write(f"latency     p50 {p50} ms, p95 {p95} ms\n")
    last = daemon.get("last_verdict")
    if last:
        out.write(f"last        {last if not isinstance(last, dict) else json.dumps(last, sort_keys=True)}\n")
    streams = daemon.get("streams") or daemon.get("sources") or {}
    if isinstance(streams, dict) and streams:
        out.write("sources\n")
        for name, st in streams.items():
            if isinstance(st, dict):
                fields = " ".join(f"{k}={st[k]}" for k in ("state", "frames_read", "frames_emitted", "drops",
                                                            "reconnects") if k in st)
                out.write(f"  {name:<14} {fields}\n")
    sinks = daemon.get("sinks") or {}
    if isinstance(sinks, dict) and sinks:
        out.write("sinks\n")
        for name, st in sinks.items():
            if isinstance(st, dict):
                fields = " ".join(f"{k}={st[k]}" for k in ("type", "state", "backlog", "delivered") if k in st)
                lat = st.get("latency_p50_ms")
                if lat is not None:
                    fields += f" latency p50 {lat} ms, p95 {st.get('latency_p95_ms')} ms"
                out.write(f"  {printable_name(name):<14} {fields}\n")
                if st.get("last_error"):
                    # a receiver's text (an HTTP reason, a broker's message): shown with control characters escaped
                    out.write(f"  {'':<14} last error {st.get('last_error_at') or ''}: "
                              f"{printable_name(str(st['last_error']))}\n")
    out.write("database\n")
    if db.get("error"):
        out.write(f"  unavailable: {db['error']}\n")
        return
    c = db["counts"]
    rate = "-" if db["fail_rate"] is None else f"{100 * db['fail_rate']:.1f}%"
    out.write(f"  last {_fmt_duration(db['window_s'])}: {db['inspected']} inspected, {c['pass']} pass, "
              f"{c['fail']} fail, {c['error']} error (fail rate {rate})\n")
    out.write(f"  total       {db['total_inspections']} inspections\n")
    if db["last"]:
        L = db["last"]
        score = "-" if L["score"] is None else f"{L['score']:.4g}"
        out.write(f"  newest      #{L['id']} {L['captured_at']} {L['source']} {L['verdict']} score {score}\n")


def run(args: argparse.Namespace, out: Optional[IO[str]] = None) -> int:
    from inspector.storage.locate import load_config
    from inspector.storage.queries import parse_when

    out = out or sys.stdout
    settings = load_config(args)
    now = datetime.now(timezone.utc)
    window = now - parse_when(args.window, now=now)
    if window.total_seconds() <= 0:
        raise InspectorError(f"--window {args.window!r} must be an age such as 30m, 1h or 1d")
    path = Path(args.status_file) if args.status_file else status_file_path(settings)
    daemon = read_daemon_status(path)
    if getattr(args, "db", None) or settings is not None:
        db = read_database_summary(args, settings, window)
    else:
        db = {"error": "no --config or --db given"}
    if args.format == "json":
        out.write(json.dumps({"daemon": daemon, "database": db}, indent=2, default=str) + "\n")
    else:
        _write_text(out, daemon, db)
    if not daemon.get("running"):
        return 3
    return 1 if daemon.get("stalled") else 0
