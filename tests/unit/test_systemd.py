"""SystemdNotifier against a datagram socket the test owns (path and abstract addresses)."""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from inspector.systemd import SystemdNotifier


@pytest.fixture
def path_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2.0)
    yield path, s
    s.close()


@pytest.fixture
def abstract_socket():
    name = f"inspector-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    s.settimeout(2.0)
    yield "@" + name, s
    s.close()


def _recv(s: socket.socket) -> str:
    return s.recv(4096).decode()


def test_messages_reach_a_path_socket(path_socket):
    path, s = path_socket
    with SystemdNotifier({"NOTIFY_SOCKET": path}) as n:
        assert n.enabled
        assert n.ready()
        assert _recv(s) == "READY=1"
        assert n.status("scoring\nline 2")
        assert _recv(s) == "STATUS=scoring line 2"
        assert n.watchdog()
        assert _recv(s) == "WATCHDOG=1"
        assert n.stopping("draining 3 frames")
        assert _recv(s) == "STOPPING=1\nSTATUS=draining 3 frames"
        assert n.extend_timeout(90)
        assert _recv(s) == "EXTEND_TIMEOUT_USEC=90000000"


def test_abstract_address(abstract_socket):
    addr, s = abstract_socket
    n = SystemdNotifier({"NOTIFY_SOCKET": addr})
    assert n.ready("warm")
    assert _recv(s) == "READY=1\nSTATUS=warm"
    n.close()


def test_noop_outside_systemd():
    n = SystemdNotifier({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None


def test_send_failure_is_counted_not_raised(tmp_path, caplog):
    n = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.send_failures == 2
    assert sum("failed" in r.message for r in caplog.records) == 1


def test_relative_address_disables():
    assert not SystemdNotifier({"NOTIFY_SOCKET": "relative.sock"}).enabled


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "junk"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(path_socket, env, expected):
    path, _ = path_socket
    assert SystemdNotifier({"NOTIFY_SOCKET": path, **env}).watchdog_interval() == expected
