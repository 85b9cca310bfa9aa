"""No outbound network: `inspector calibrate` and the real daemon run under a guard that records
(and refuses) every connect() to a non-loopback address and every name lookup of a non-local
host, in the process and in anything it forks or starts. OpenVINO's telemetry did both on every
import (it treats a missing consent file as consent) and wrote ~/intel; HOME here is a fresh
folder, so nothing may appear under it.

Run under umask 022, the same runs check that what they write is readable by others (0644):
the bundle's report.html, the heatmaps and status.json."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tests.conftest import ROOT, daemon_env, write_png
from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, rows, wait_for

GUARD = r'''
"""Test guard (tests/integration/test_no_network.py): refuse and record outbound network use."""
import os
import socket

_LOG = os.environ["NETGUARD_LOG"]
_LOCAL_NAMES = {None, "", "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


def _record(what):
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()} {what}\n")


def _ip(host):
    import ipaddress

    try:
        return ipaddress.ip_address(str(host).split("%")[0])
    except ValueError:
        return None


def _loopback(host):
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def _check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
        _record(f"connect {address!r}")
        raise PermissionError(f"test guard: outbound connection to {address!r} refused")


_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def connect(self, address):
    _check(self, address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


_getaddrinfo = socket.getaddrinfo


def getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name not in _LOCAL_NAMES and _ip(name) is None:  # an address is no lookup: connect() decides
        _record(f"getaddrinfo {name!r}")
        raise socket.gaierror(socket.EAI_NONAME, f"test guard: name lookup of {name!r} refused")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
'''

SIZE = 64


def _guarded_env(tmp_path: Path) -> tuple[dict, Path, Path]:
    guard_dir = tmp_path / "guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    home = tmp_path / "home"
    home.mkdir()
    log = tmp_path / "network.log"
    log.write_text("")
    env = daemon_env()
    env["PYTHONPATH"] = str(guard_dir) + os.pathsep + env["PYTHONPATH"]
    for ci_flag in ("CI", "TF_BUILD", "JENKINS_URL"):  # OpenVINO skips telemetry in CI; this machine may be one
        env.pop(ci_flag, None)
    env.update(HOME=str(home), NETGUARD_LOG=str(log))
    return env, home, log


def _umask_022():
    os.umask(0o022)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_guard_catches_an_outbound_connection(tmp_path):
    """The guard itself works (else the test below proves nothing)."""
    env, _, log = _guarded_env(tmp_path)
    code = ("import socket\n"
            "for target in (lambda: socket.create_connection(('192.0.2.1', 443), timeout=1),\n"
            "               lambda: socket.getaddrinfo('www.example.com', 443)):\n"
            "    try:\n"
            "        target()\n"
            "    except OSError:\n"
            "        pass\n")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    text = log.read_text()
    assert "connect ('192.0.2.1', 443)" in text and "getaddrinfo 'www.example.com'" in text


def test_calibrate_and_daemon_make_no_outbound_connection(tmp_path):
    from calibration.synthetic import make_part

    env, home, log = _guarded_env(tmp_path)
    golden = tmp_path / "golden"
    golden.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):
        write_png(golden / f"g{i}.png", make_part(rng, size=SIZE))
    cfg = tmp_path / "calib.yaml"
    cfg.write_text(yaml.safe_dump({"preprocess": {"size": [SIZE, SIZE]},
                                   "calibration": {"holdout": 0.25, "min_images": 4},
                                   "engine": {"type": "openvino", "threads": 1}}))
    bundle = tmp_path / "bundle"
    p = subprocess.run([sys.executable, "-m", "inspector", "calibrate", "--golden", str(golden), "--out", str(bundle),
                        "--config", str(cfg), "--quiet"], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=600, preexec_fn=_umask_022)
    assert p.returncode == 0, p.stderr[-3000:]
    assert log.read_text() == "", f"calibrate used the network:\n{log.read_text()}"

    ws = make_workspace(tmp_path / "ws", bundle, engine={"type": "openvino"}, output={"heatmaps_for_passes": True})
    d = Daemon(ws, env=env)
    old_mask = os.umask(0o022)  # inherited by the daemon
    try:
        d.start()
    finally:
        os.umask(old_mask)
    try:
        drop_image(ws.inbox, "good.png", make_part(rng, size=SIZE))
        drop_image(ws.inbox, "bad.png", make_part(rng, size=SIZE, defect="missing_hole"))
        wait_for(lambda: len(rows(ws.db)) == 2, 120, "two rows", d)
        assert d.terminate() == 0
    finally:
        d.stop()
    assert log.read_text() == "", f"the daemon used the network:\n{log.read_text()}\n{d.tail()}"
    assert not (home / "intel").exists(), sorted(str(p) for p in home.rglob("*"))
    assert sorted(os.listdir(home)) == []

    # files a person or a web server opens: readable by others under umask 022
    assert _mode(bundle / "report.html") == 0o644
    heatmaps = [Path(r["heatmap_path"]) for r in rows(ws.db)]
    assert len(heatmaps) == 2 and all(h.is_file() for h in heatmaps)
    assert [_mode(h) for h in heatmaps] == [0o644, 0o644]
    assert _mode(ws.root / "status.json") == 0o644
