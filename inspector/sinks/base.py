"""What every sink is: open / deliver / close, called from its own worker thread only."""
from __future__ import annotations

from typing import Protocol

from inspector.errors import ConfigError
from inspector.storage.outbox import Event


class SinkError(Exception):
    """The receiver is not reachable or did not take the events (the message says which and why):
    the worker keeps them in the outbox and tries again."""


class SinkUnavailable(ConfigError):
    """The sink's protocol library is not installed: refused at start, with the install line."""


def require(module: str, what: str):
    """Import a protocol library inside the sink's constructor (a config validates anywhere)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise SinkUnavailable(f"sink {what}: the Python package for it is not installed; "
                              f"pip install 'inspector[line]'") from None


class Sink(Protocol):
    name: str
    kind: str

    def open(self) -> None:
        """Connect (clients) or start serving (servers). Raise SinkError when it cannot yet."""

    def deliver(self, events: list[Event]) -> None:
        """Hand over all ``events`` (in order) or raise SinkError; returning means the receiver
        has them (broker acknowledged, server state updated, HTTP 2xx)."""

    def restore(self, latest: list[Event]) -> None:
        """After open: the newest event of each source already delivered earlier, for servers that
        show a last state (OPC UA, Modbus); clients ignore it."""

    def tick(self) -> None:
        """Called about once a second while idle or busy (MQTT: the periodic stats message)."""

    def close(self) -> None:
        """Disconnect / stop serving; safe to call when not open."""
