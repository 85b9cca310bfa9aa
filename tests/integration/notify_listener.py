"""A stand-in for systemd's $NOTIFY_SOCKET: the daemon's sd_notify datagrams, collected by the
test (tests/integration/conftest.py's ``listener`` fixture)."""
from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from tests.conftest import daemon_env


class NotifyListener(threading.Thread):
    """Collects (monotonic time, message) for every datagram on a fresh AF_UNIX socket."""

    def __init__(self):
        super().__init__(name="notify-listener", daemon=True)
        # sun_path is limited to 107 bytes: pytest's tmp_path can be longer
        self.dir = Path(tempfile.mkdtemp(prefix="notify-", dir="/tmp"))
        self.path = self.dir / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8")))

    def assignments(self) -> list[tuple[float, str]]:
        """Each KEY=VALUE line of each datagram, in arrival order."""
        with self._lock:
            return [(t, line) for t, msg in self.messages for line in msg.split("\n") if line]

    def lines(self) -> list[str]:
        return [line for _, line in self.assignments()]

    def close(self) -> None:
        self._halt.set()
        self.join(timeout=2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


WATCHDOG_USEC = 2_000_000  # 2 s: pings expected about every second


def notify_env(listener: NotifyListener) -> dict:
    """The daemon's environment as systemd sets it: $NOTIFY_SOCKET is the listener's socket, and the
    watchdog is on at WATCHDOG_USEC (no $WATCHDOG_PID: an inherited one would name another process
    and turn the daemon's watchdog off)."""
    env = daemon_env()
    env["NOTIFY_SOCKET"] = str(listener.path)
    env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
    env.pop("WATCHDOG_PID", None)
    return env


