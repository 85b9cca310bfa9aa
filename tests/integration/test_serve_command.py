"""`inspector serve` as a process: binds to loopback, answers the pages, refuses a review post
without a login; `--hash-password` reads a password from stdin and prints a hash that verifies."""
from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request

from inspector.console.auth import verify_password
from inspector.storage import ResultStore
from tests.conftest import ROOT, daemon_env
from tests.db_fixtures import make_verdict
from tests.integration.test_console_browser import free_port, wait_http


def test_serve_answers_on_loopback_and_is_read_only(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(f"sqlite:///{db}") as s:
        s.ensure_schema()
        s.record(make_verdict(kind="fail", regions=((1, 1, 2, 2, 4, 0.9),)), frame_key="a", heatmap_path=None)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "inspector", "serve", "--db", str(db), "--listen", str(port)],
                            env=daemon_env(), cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/", alive=lambda: proc.poll() is None)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/history") as r:
            page = r.read().decode()
        assert 'data-id="1"' in page and "read-only" in page and "daemon:" not in page
        req = urllib.request.Request(f"http://127.0.0.1:{port}/inspection/1/review", data=b"kind=false_reject",
                                     method="POST")
        try:
            urllib.request.urlopen(req)
            raise AssertionError("a review was accepted without a login")
        except urllib.error.HTTPError as exc:
            assert exc.code == 403
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0].decode()
    assert f"console on http://127.0.0.1:{port}/ (read-only: no login configured)" in out


def test_hash_password_from_stdin():
    p = subprocess.run([sys.executable, "-m", "inspector", "serve", "--hash-password"], input="a long secret\n",
                       capture_output=True, text=True, env=daemon_env(), cwd=str(ROOT), timeout=60)
    assert p.returncode == 0, p.stderr
    assert verify_password("a long secret", p.stdout.strip())
    short = subprocess.run([sys.executable, "-m", "inspector", "serve", "--hash-password"], input="short\n",
                           capture_output=True, text=True, env=daemon_env(), cwd=str(ROOT), timeout=60)
    assert short.returncode == 2 and "at least 8" in short.stderr
