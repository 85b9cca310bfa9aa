"""`inspector status`: the daemon's status.json plus a read-only database summary."""
from __future__ import annotations

import argparse
import io
import json
import os
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from inspector.commands import status
from inspector.storage import ResultStore
from inspector.types import Frame, Verdict, VerdictKind


def _args(**kw) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    status.add_arguments(p)
    argv = []
    for k, v in kw.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return p.parse_args(argv)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'inspector.db'}"
    store = ResultStore(url)
    store.ensure_schema()
    now = datetime.now(timezone.utc)
    for i, (kind, age_min) in enumerate([("pass", 5), ("pass", 10), ("fail", 20), ("error", 30), ("pass", 300)]):
        frame = Frame(id=f"f{i}", source="line1", captured_at=now - timedelta(minutes=age_min),
                      image=np.zeros((4, 4, 3), np.uint8))
        score = None if kind == "error" else 0.1 * i
        store.record(Verdict(frame=frame, kind=VerdictKind(kind), score=score, threshold=0.5,
                             error="decode" if kind == "error" else None), frame_key=f"k{i}", heatmap_path=None)
    store.close()
    return url


def _write_status(path, **over):
    data = {"pid": os.getpid(), "started_at": (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat(),
            "frames_processed": 1234, "queue_depth": 2, "bundle_id": "b-42", "engine": "onnxruntime/fp32",
            "last_verdict": "pass", "latency_p50_ms": 12.5, "latency_p95_ms": 30.1,
            "streams": {"line1": {"state": "connected", "frames_read": 900, "frames_emitted": 450, "drops": 3,
                                  "reconnects": 1}}}
    data.update(over)
    path.write_text(json.dumps(data))


def test_running_daemon_text(tmp_path, db):
    sf = tmp_path / "status.json"
    _write_status(sf)
    out = io.StringIO()
    rc = status.run(_args(db=db, status_file=sf), out)
    text = out.getvalue()
    assert rc == 0, text
    assert f"running (pid {os.getpid()})" in text
    assert "up 2h 0m" in text and "b-42" in text and "p50 12.5 ms, p95 30.1 ms" in text
    assert "line1" in text and "drops=3" in text and "reconnects=1" in text
    assert "4 inspected, 2 pass, 1 fail, 1 error (fail rate 25.0%)" in text
    assert "total       5 inspections" in text


def test_json_and_default_status_path_next_to_sqlite(tmp_path, db, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = tmp_path / "inspector.yaml"
    cfg.write_text(f"database:\n  url: {db}\n")
    _write_status(tmp_path / "status.json")
    out = io.StringIO()
    assert status.run(_args(config=cfg, format="json"), out) == 0
    data = json.loads(out.getvalue())
    assert data["daemon"]["running"] is True and data["daemon"]["frames_processed"] == 1234
    assert data["database"]["counts"] == {"pass": 2, "fail": 1, "error": 1}
    assert data["database"]["last"]["verdict"] == "pass"


def test_status_file_location():
    class S:
        class database:  # noqa: N801 - a stand-in for Settings.database
            url = "sqlite:////srv/db/inspector.db"

    # systemd's StateDirectory= wins (it may list several folders, colon-separated)
    assert str(status.status_file_path(S, {"STATE_DIRECTORY": "/var/lib/inspector:/x"})) == \
        "/var/lib/inspector/status.json"
    assert str(status.status_file_path(S, {})) == "/srv/db/status.json"
    assert str(status.status_file_path(None, {})) == "status.json"


def test_not_running_and_stale(tmp_path, db):
    out = io.StringIO()
    assert status.run(_args(db=db, status_file=tmp_path / "missing.json"), out) == 3
    assert "not running" in out.getvalue() and "no status file" in out.getvalue()

    sf = tmp_path / "status.json"
    _write_status(sf, pid=2 ** 22 + 12345)  # no such process
    out = io.StringIO()
    assert status.run(_args(db=db, status_file=sf), out) == 3

    _write_status(sf)
    old = datetime.now().timestamp() - 3600
    os.utime(sf, (old, old))
    out = io.StringIO()
    assert status.run(_args(db=db, status_file=sf), out) == 3
    assert "hung?" in out.getvalue()


def test_database_missing_is_reported_not_fatal(tmp_path):
    sf = tmp_path / "status.json"
    _write_status(sf)
    out = io.StringIO()
    assert status.run(_args(db=tmp_path / "nope" / "x.db", status_file=sf), out) == 0
    assert "unavailable" in out.getvalue()


def test_stalled_daemon_is_said_so_and_exits_non_zero(tmp_path, db):
    """A running daemon whose writer makes no progress while frames wait (issue 11, item 10) is
    not "running" as far as a monitor is concerned."""
    sf = tmp_path / "status.json"
    stall = "no commit for 75 s while 9 frames wait (last error: database is locked)"
    _write_status(sf, stalled=stall, frames_waiting=9)
    out = io.StringIO()
    rc = status.run(_args(db=db, status_file=sf), out)
    text = out.getvalue()
    assert rc == 1, text
    assert f"stalled (pid {os.getpid()})" in text
    assert f"stalled: {stall}" in text
    _write_status(sf, stalled=None, frames_waiting=0)
    out = io.StringIO()
    assert status.run(_args(db=db, status_file=sf), out) == 0
    assert "stalled:" not in out.getvalue() and "running (pid" in out.getvalue()
