"""Where a server sink binds: ``listen`` (host:port, loopback unless configured) or, with
``interface``, that network interface's IPv4 address (Linux), so a config can say "the line
network card" without hard-coding its address."""
from __future__ import annotations

import fcntl
import socket
import struct

from inspector.metrics import parse_listen
from inspector.sinks.base import SinkError

_SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str:
    """The IPv4 address of network interface ``name``; SinkError when it has none (yet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError as exc:
            raise SinkError(f"interface {name!r} has no IPv4 address ({exc.strerror})") from None
    return socket.inet_ntoa(packed[20:24])


def bind_address(listen: str, interface: str | None) -> tuple[str, int]:
    host, port = parse_listen(listen)
    if interface is not None:
        host = interface_address(interface)
    return host, port
