"""sd_notify(3) without libsystemd: readiness, status text and watchdog pings to systemd.

systemd passes ``$NOTIFY_SOCKET`` to a ``Type=notify`` service: a filesystem path or, when it
starts with ``@``, a Linux abstract socket name. Each message is one AF_UNIX datagram of
newline-separated ``KEY=VALUE`` assignments. Outside systemd (no ``$NOTIFY_SOCKET``) every
call is a cheap no-op, so the daemon calls these unconditionally.

The watchdog contract (``WatchdogSec=`` in the unit): systemd sets ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``); if no ``WATCHDOG=1`` arrives within that interval the service is killed
and, with ``Restart=on-failure``, restarted. The service should ping only while inference
makes progress, at about half the interval (see :meth:`SystemdNotifier.watchdog_interval`).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
from typing import Mapping, Optional

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; a no-op when not run by systemd.

    ``environ`` defaults to ``os.environ`` and is read once, at construction (tests pass a
    dict). Sending never raises: a failure is logged once at WARNING and counted
    in :attr:`send_failures` (the daemon must not die because systemd went away).
    """

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        self._address = self._parse_address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._warned = False
        self.send_failures = 0
        if self._address is not None:
            log.debug("systemd notify socket: %r", self._address)

    @staticmethod
    def _parse_address(raw: str) -> Optional[str]:
        if not raw:
            return None
        if raw.startswith("@"):
            # Linux abstract namespace: a leading NUL byte instead of '@'.
            return "\0" + raw[1:]
        if raw.startswith("/"):
            return raw
        # vsock: and relative paths are not used by the service manager for our units.
        log.warning("NOTIFY_SOCKET=%r is neither an absolute path nor an abstract @name; "
                    "systemd notifications disabled", raw)
        return None

    @property
    def enabled(self) -> bool:
        """True when running under a service manager that accepts notifications."""
        return self._address is not None

    # ------------------------------------------------------------------ messages
    def notify(self, message: str) -> bool:
        """Send one raw sd_notify datagram (``"KEY=VALUE\\nKEY2=VALUE2"``).

        Returns True when sent, False when disabled or the send failed.
        """
        if self._address is None:
            return False
        data = message.encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self._address)
                return True
            except OSError as exc:
                self.send_failures += 1
                if not self._warned:
                    self._warned = True
                    log.warning("systemd notify to %r failed (%s); further failures are not logged",
                                self._address, exc)
                return False

    def ready(self, status: Optional[str] = None) -> bool:
        """``READY=1``: start-up (model load, engine warm-up) is done; systemctl start returns."""
        return self.notify("READY=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def status(self, text: str) -> bool:
        """``STATUS=...``: the one line shown by ``systemctl status``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: proof of life. Call only while the pipeline makes progress."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: Optional[str] = None) -> bool:
        """``STOPPING=1``: shutdown (queue drain) has begun."""
        return self.notify("STOPPING=1" + (f"\nSTATUS={_one_line(status)}" if status else ""))

    def extend_timeout(self, seconds: float) -> bool:
        """``EXTEND_TIMEOUT_USEC``: ask for more time during a long start (e.g. a TensorRT
        engine build) or a long drain, without raising TimeoutStartSec for every start."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> Optional[float]:
        """The watchdog timeout in seconds (``$WATCHDOG_USEC``), or None when the watchdog is
        off or meant for another process (``$WATCHDOG_PID`` != our pid). Ping at about half."""
        if self._address is None or not self._watchdog_usec:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            log.warning("WATCHDOG_USEC=%r is not an integer; watchdog pings disabled", self._watchdog_usec)
            return None
        return usec / 1_000_000 if usec > 0 else None

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> "SystemdNotifier":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _one_line(text: str) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(str(text).split())
