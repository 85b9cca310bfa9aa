"""Prometheus text-format metrics for the daemon, served on ``/metrics`` by a stdlib HTTP server.

No dependency: the handful of families below fit in a page of code, and the line-side
machine gets one package less to install and audit. (prometheus_client would add process
metrics and multiprocess modes we do not use; swapping to it later changes only this module.)

Families (all prefixed with the namespace, ``inspector_`` by default):

====================================  =========  ============================================
frames_total{verdict,source}          counter    inspected frames by verdict (pass/fail/error)
stage_latency_seconds{stage}          histogram  time per pipeline stage
queue_depth{queue}                    gauge      frames waiting in a bounded queue
stream_reconnects_total{source}       counter    stream reconnect attempts
stream_drops_total{source}            counter    frames a stream dropped (pipeline full)
stream_connected{source}              gauge      1 while a stream source is delivering
engine_info{type,precision}           gauge      1 for the engine in use
start_time_seconds                    gauge      unix time the daemon started
stalled                               gauge      1 while frames wait and nothing was committed for runtime.stall_seconds
sink_up{sink,type}                    gauge      1 while a sink is connected / serving (inspector/sinks/)
sink_backlog_events{sink}             gauge      outbox events the sink has not delivered yet
sink_delivered_total{sink}            counter    events delivered
sink_errors_total{sink}               counter    failed connects / deliveries (each retried)
sink_delivery_seconds{sink}           histogram  verdict commit -> delivered
====================================  =========  ============================================
"""
from __future__ import annotations

import bisect
import ipaddress
import logging
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterable, Mapping, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelValues = tuple[str, ...]


# ---------------------------------------------------------------- config
def normalised_listen(v) -> Optional[str]:
    """A config's ``listen`` value checked and written one way ("8321" -> "127.0.0.1:8321",
    IPv6 hosts in brackets); None stays None."""
    if v is None:
        return None
    host, port = parse_listen(str(v))
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen(listen: str, *, allow_port_zero: bool = False) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"``, ``":port"`` or ``"port"`` -> (host, port).

    A missing host means loopback (127.0.0.1): exposing metrics beyond the machine must be
    an explicit choice. Raises ValueError with a readable message.
    """
    text = str(listen).strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"{listen!r}: expected [ipv6]:port")
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = "", text
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"{listen!r}: the port must be a number (expected host:port, e.g. 127.0.0.1:9464)") from None
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError(f"{listen!r}: the port must be between 1 and 65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part and (part.isalnum() or "-" in part) for part in host.split(".")):
            raise ValueError(f"{listen!r}: {host!r} is not an IP address or host name") from None
    return host, port


class MetricsConfig(BaseModel):
    """``metrics.listen``: where to serve /metrics; unset (the default) serves nothing.
    ``"9464"`` or ``":9464"`` means 127.0.0.1:9464; use ``0.0.0.0:9464`` to expose it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: Optional[str] = None
    # serve on this network interface's IPv4 address instead of listen's host (listen's port is kept)
    interface: Optional[str] = Field(None, min_length=1, max_length=15)

    @field_validator("listen", mode="before")
    @classmethod
    def _host_port(cls, v):
        return normalised_listen(v)


# ---------------------------------------------------------------- families
def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _labels(names: Iterable[str], values: Iterable[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: tuple[str, ...], lock: threading.Lock) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = labelnames
        self._lock = lock

    def _key(self, labels: Mapping[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {sorted(self.labelnames)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Family):
    kind = "counter"

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def set_total(self, total: float, **labels: str) -> None:
        """Mirror a cumulative count kept elsewhere (e.g. a source's stats); never goes down."""
        key = self._key(labels)
        with self._lock:
            if total > self._values.get(key, 0):
                self._values[key] = total

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0)

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in sorted(self._values.items())]


class Gauge(_Family):
    kind = "gauge"

    def __init__(self, *a) -> None:
        super().__init__(*a)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def value(self, **labels: str) -> Optional[float]:
        with self._lock:
            return self._values.get(self._key(labels))

    def samples(self) -> list[str]:
        return [f"{self.name}{_labels(self.labelnames, k)} {_fmt(v)}" for k, v in sorted(self._values.items())]


class Histogram(_Family):
    kind = "histogram"

    def __init__(self, *a, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        super().__init__(*a)
        self.buckets = tuple(sorted(buckets))
        # per label set: [count per bucket (non-cumulative, last = +Inf)], sum, count
        self._values: dict[LabelValues, tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        i = bisect.bisect_left(self.buckets, value)  # le is inclusive
        with self._lock:
            counts, total = self._values.setdefault(key, ([0] * (len(self.buckets) + 1), [0.0]))
            counts[i] += 1
            total[0] += value

    def count(self, **labels: str) -> int:
        with self._lock:
            entry = self._values.get(self._key(labels))
            return sum(entry[0]) if entry else 0

    def samples(self) -> list[str]:
        out = []
        for key, (counts, total) in sorted(self._values.items()):
            running = 0
            for bound, c in zip(self.buckets + (math.inf,), counts):
                running += c
                le = 'le="' + _fmt(float(bound)) + '"'
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {running}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_fmt(total[0])}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {running}")
        return out


# ---------------------------------------------------------------- registry
class Metrics:
    """The daemon's metrics. Every method is thread-safe and cheap (one lock, no I/O).

    Collectors registered with :meth:`add_collector` run at each scrape, before rendering;
    use them to mirror state kept elsewhere (queue sizes, source stats) instead of pushing.
    """

    def __init__(self, namespace: str = "inspector") -> None:
        self._lock = threading.Lock()
        self.namespace = namespace
        p = f"{namespace}_" if namespace else ""
        self.frames_total = Counter(f"{p}frames_total", "Inspected frames by verdict and source.",
                                    ("verdict", "source"), self._lock)
        self.stage_latency_seconds = Histogram(f"{p}stage_latency_seconds", "Time spent per pipeline stage.",
                                               ("stage",), self._lock)
        self.queue_depth = Gauge(f"{p}queue_depth", "Frames waiting in a bounded queue.", ("queue",), self._lock)
        self.stream_reconnects_total = Counter(f"{p}stream_reconnects_total", "Stream reconnect attempts.",
                                               ("source",), self._lock)
        self.stream_drops_total = Counter(f"{p}stream_drops_total",
                                          "Frames a stream dropped because the pipeline was full.",
                                          ("source",), self._lock)
        self.stream_connected = Gauge(f"{p}stream_connected", "1 while a stream source is delivering frames.",
                                      ("source",), self._lock)
        self.engine_info = Gauge(f"{p}engine_info", "The inference engine in use (value is always 1).",
                                 ("type", "precision"), self._lock)
        self.start_time_seconds = Gauge(f"{p}start_time_seconds", "Unix time the daemon started.", (), self._lock)
        self.start_time_seconds.set(time.time())
        self.stalled = Gauge(f"{p}stalled", "1 while frames wait and nothing was committed for runtime.stall_seconds.",
                             (), self._lock)
        self.stalled.set(0)
        self._families: tuple[_Family, ...] = (
            self.frames_total, self.stage_latency_seconds, self.queue_depth, self.stream_reconnects_total,
            self.stream_drops_total, self.stream_connected, self.engine_info, self.start_time_seconds, self.stalled,
        )
        self._collectors: list[Callable[[], None]] = []

    # convenience for the service
    def count_frame(self, source: str, verdict: str) -> None:
        self.frames_total.inc(source=source, verdict=verdict)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency_seconds.observe(seconds, stage=stage)

    def observe_timings_ms(self, timings_ms: Mapping[str, float]) -> None:
        """A Verdict's ``timings_ms`` (stage -> milliseconds)."""
        for stage, ms in timings_ms.items():
            self.stage_latency_seconds.observe(ms / 1000.0, stage=stage)

    def set_queue_depth(self, depth: int, queue: str = "inference") -> None:
        self.queue_depth.set(depth, queue=queue)

    def set_engine_info(self, type: str, precision: str) -> None:  # noqa: A002 - the label's name
        key = self.engine_info._key({"type": type, "precision": precision})
        with self._lock:  # one engine at a time, swapped atomically for a concurrent scrape
            self.engine_info._values.clear()
            self.engine_info._values[key] = 1

    def update_stream_stats(self, source: str, stats: Mapping[str, Union[int, float, str]]) -> None:
        """Mirror a stream source's cumulative ``stats()`` (reconnects, drops, state)."""
        self.stream_reconnects_total.set_total(int(stats.get("reconnects", 0)), source=source)
        self.stream_drops_total.set_total(int(stats.get("drops", 0)), source=source)
        self.stream_connected.set(1 if stats.get("state") == "connected" else 0, source=source)

    def add_collector(self, collect: Callable[[], None]) -> None:
        self._collectors.append(collect)

    @property
    def lock(self) -> threading.Lock:
        """The registry's lock, for families made elsewhere (inspector/sinks/manager.py)."""
        return self._lock

    def add_family(self, family: _Family) -> None:
        """Serve a family made with :attr:`lock` (e.g. the sinks'), after the built-in ones."""
        with self._lock:
            self._families = self._families + (family,)

    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        for collect in list(self._collectors):
            try:
                collect()
            except Exception:  # a broken collector must not break the scrape
                log.exception("metrics collector %r failed", collect)
        lines: list[str] = []
        with self._lock:
            for fam in self._families:
                lines += fam.header()
                lines += fam.samples()
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTTP
# An HTTP/1.0 scrape takes milliseconds; these bound what idle or slow clients can hold.
MAX_CONNECTIONS = 16  # connections handled at once (a thread each); more wait in the listen backlog
TIMEOUT_S = 3.0  # per socket read/write: an idle or trickling client is disconnected after this
LISTEN_BACKLOG = 64


class _Handler(BaseHTTPRequestHandler):
    server_version = "inspector-metrics"
    metrics: Metrics  # set on the subclass made per server
    timeout = TIMEOUT_S  # StreamRequestHandler applies it to the connection's socket; set per server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            body = self.metrics.render().encode("utf-8")
            self._reply(200, CONTENT_TYPE, body)
        elif path == "/":
            self._reply(200, "text/html; charset=utf-8",
                        b'<html><body><a href="/metrics">/metrics</a></body></html>\n')
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found; try /metrics\n")

    def _reply(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("metrics %s: " + format, self.client_address[0], *args)


class _Server(ThreadingHTTPServer):
    """A thread per connection, at most ``max_connections`` at once: the accept loop waits for a
    free slot (new clients queue in the listen backlog) instead of starting a thread per client."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG
    max_connections = MAX_CONNECTIONS

    def server_activate(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._stopping = threading.Event()
        super().server_activate()

    def process_request(self, request, client_address) -> None:
        while not self._slots.acquire(timeout=0.2):
            if self._stopping.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)  # starts the handler thread
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class MetricsServer:
    """Serves ``metrics`` at ``http://<listen>/metrics`` from a daemon thread.

    ``listen``: host:port as in :func:`parse_listen`; port 0 picks a free port (see
    :attr:`address` after :meth:`start`). ``max_connections`` and ``timeout_s`` bound what
    clients can hold (see :data:`MAX_CONNECTIONS`, :data:`TIMEOUT_S`).
    """

    def __init__(self, metrics: Metrics, listen: str = "127.0.0.1:9464", *,
                 max_connections: int = MAX_CONNECTIONS, timeout_s: float = TIMEOUT_S) -> None:
        if max_connections < 1 or timeout_s <= 0:
            raise ValueError("max_connections must be >= 1 and timeout_s > 0")
        self.metrics = metrics
        self.max_connections = max_connections
        self.timeout_s = timeout_s
        self.host, self.port = parse_listen(listen, allow_port_zero=True)
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound; the requested ones before start()."""
        if self._server is None:
            return self.host, self.port
        return self.host, int(self._server.server_address[1])

    def start(self) -> None:
        if self._server is not None:
            return
        handler = type("MetricsHandler", (_Handler,), {"metrics": self.metrics, "timeout": self.timeout_s})
        attrs: dict = {"max_connections": self.max_connections}
        if ":" in self.host:
            import socket

            attrs["address_family"] = socket.AF_INET6
        server_cls = type("MetricsHTTPServer", (_Server,), attrs)
        self._server = server_cls((self.host, self.port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="metrics-http", daemon=True)
        self._thread.start()
        host, port = self.address
        local = host == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)
        log.info("metrics served on http://%s:%d/metrics%s", host if ":" not in host else f"[{host}]", port,
                 "" if local else " (reachable from other machines)")

    def stop(self) -> None:
        if self._server is None:
            return
        self._server._stopping.set()  # an accept loop waiting for a free slot gives up
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> "MetricsServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
