"""Receivers for the sink tests, all real and all on loopback: a Mosquitto broker started from a
temp config on a free port, an MQTT subscriber (paho) that records what it gets, and an HTTP
server that records webhook POSTs.

Registered in tests/conftest.py. The broker fixture skips, saying what to install, only when the
``mosquitto`` binary is missing (.ci/run installs it: apt-get install mosquitto).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> Optional[str]:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto")
                                               if os.access(p, os.X_OK)), None)


class Mosquitto:
    """A broker on 127.0.0.1:``port``. ``persistent``: sessions and queued QoS 1 messages are saved
    on every change, so a subscriber's session survives the broker's SIGKILL (the tests' receiver
    must not lose what the broker already acknowledged to the daemon)."""

    def __init__(self, *, persistent: bool = False, extra: str = ""):
        binary = mosquitto_binary()
        if binary is None:
            pytest.skip("the Mosquitto broker is not installed: apt-get install -y mosquitto")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="inspector-mqtt-"))
        self.port = free_port()
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"log_dest file {self.dir / 'log'}"]
        if persistent:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1",
                      "autosave_on_changes true"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to user mosquitto, who cannot write the temp folder
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "Mosquitto":
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def kill(self) -> None:
        """SIGKILL: no session is saved beyond what autosave already wrote."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    broker = Mosquitto().start()
    yield broker
    broker.cleanup()


class Subscriber:
    """A paho client subscribed to ``topic`` (QoS 1) that keeps every message; it reconnects by
    itself. ``persistent``: a fixed client id and a kept session (with a persistent broker, the
    messages published while it is away are queued for it)."""

    def __init__(self, port: int, topic: str = "#", *, persistent: bool = False):
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-sub-{port}" if persistent else "",
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.on_connect = lambda c, u, f, rc, p=None: (c.subscribe(topic, qos=1) if not rc.is_failure else None)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_disconnect = lambda *a: self.subscribed.clear()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=5)
        self.client.loop_start()
        assert self.subscribed.wait(10), "test subscriber: no SUBACK within 10 s"

    def _on_message(self, _c, _u, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p, _ in self.messages if t == topic]

    def verdicts(self) -> list[dict]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/verdict")]

    def wait(self, predicate: Callable[["Subscriber"], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; got {len(self.messages)} message(s)")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class WebhookReceiver:
    """A local HTTP server that records each POST (headers, body) and answers ``status`` (a
    callable can answer per request, e.g. 500 for the first two)."""

    def __init__(self, status: Callable[[int], int] = lambda n: 200, port: int = 0):
        self.requests: list[tuple[dict, bytes]] = []
        self.status = status
        self._n = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver._n += 1
                code = receiver.status(receiver._n)
                if 200 <= code < 300:
                    receiver.requests.append((dict(self.headers), body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    @property
    def attempts(self) -> int:
        return self._n

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


# ---------------------------------------------------------------- the daemon's side, without the daemon
def sink_manager(tmp_path: Path, sink: dict, *, sources=("cam1", "cam2"), bundle_id: Optional[str] = None,
                 metrics=None, stats: Optional[Callable[[], dict]] = None, db_url: Optional[str] = None):
    """(store, SinkManager) for one sink config, on ``db_url`` or a SQLite file in ``tmp_path``
    (reused by a second call: the same database, as after a restart)."""
    from inspector.settings import settings_from_dict
    from inspector.sinks.manager import SinkContext, SinkManager
    from inspector.storage import ResultStore

    settings = settings_from_dict({"sources": [{"name": s, "inbox": str(tmp_path)} for s in sources],
                                   "sinks": [sink]}, base_dir=tmp_path)
    store = ResultStore(db_url or f"sqlite:///{tmp_path / 'r.db'}")
    store.ensure_schema()
    ctx = SinkContext(list(sources), bundle_id, stats=stats or (lambda: {"frames_processed": 7}))
    return store, SinkManager(settings.sinks, store, ctx, metrics=metrics, grace_s=2.0)


def record_verdict(store, i: int, source: str = "cam1", kind: str = "fail", score: Optional[float] = 0.75,
                   regions=((1, 2, 3, 4, 12, 0.9),)) -> int:
    """Record one verdict of part ``i`` (frame key ``<source>-<i>``) as the daemon's writer does."""
    from tests.db_fixtures import make_verdict

    return store.record(make_verdict(kind=kind, source=source, name=f"p{i}.png", score=score, regions=regions),
                        frame_key=f"{source}-{i}", heatmap_path=None)


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def make_tls_files(folder: Path, host_ip: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``host_ip`` signed by it: (ca.pem, server.pem,
    server.key), for a TLS broker in a test."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("broker")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host_ip))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    for p in paths:
        p.chmod(0o644)
    return paths
