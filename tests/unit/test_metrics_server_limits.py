"""The /metrics endpoint holds a bounded number of connections, each with a timeout: idle
connections (a port scanner, a stuck client, a slowloris) cannot pile up threads, and a normal
scrape is still answered."""
from __future__ import annotations

import socket
import threading
import time
import urllib.request

from inspector.metrics import Metrics, MetricsServer

N_IDLE = 200
MAX_CONNECTIONS = 8
IDLE_TIMEOUT_S = 0.5


def _open_idle(host: str, port: int, n: int) -> list[socket.socket]:
    """``n`` connections that never send anything (non-blocking connects: once the listen
    backlog is full the kernel drops further SYNs, and the test need not wait for them)."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    s.settimeout(0.05)  # (blocking with a timeout, from here on)
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:  # reset
        return True


def test_idle_connections_are_bounded_timed_out_and_a_scrape_still_answers():
    m = Metrics()
    m.count_frame("cam", "pass")
    server = MetricsServer(m, listen="127.0.0.1:0", max_connections=MAX_CONNECTIONS, timeout_s=IDLE_TIMEOUT_S)
    server.start()
    host, port = server.address
    before = threading.active_count()
    socks = _open_idle(host, port, N_IDLE)
    try:
        time.sleep(1.0)  # time for an unbounded server to take every one of them
        peak = threading.active_count() - before
        assert peak <= MAX_CONNECTIONS + 1, f"{peak} threads for {len(socks)} idle connections"

        t0 = time.monotonic()
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=20) as r:
            body = r.read().decode()
        waited = time.monotonic() - t0
        assert r.status == 200
        assert 'inspector_frames_total{verdict="pass",source="cam"} 1' in body
        # the scrape waits at most for idle connections ahead of it to time out, batch by batch
        assert waited < 20

        # the first idle connections were closed by the server once their timeout passed
        deadline = time.monotonic() + 10 * IDLE_TIMEOUT_S
        while time.monotonic() < deadline and not _closed_by_server(socks[0]):
            time.sleep(0.1)
        assert _closed_by_server(socks[0])
        assert threading.active_count() - before <= MAX_CONNECTIONS + 1
    finally:
        for s in socks:
            s.close()
        t_stop = time.monotonic()
        server.stop()
        assert time.monotonic() - t_stop < 5  # stopping does not wait behind idle clients


def test_a_slow_request_is_cut_off():
    """A client that sends half a request line and stops is disconnected after the timeout."""
    with MetricsServer(Metrics(), listen="127.0.0.1:0", timeout_s=IDLE_TIMEOUT_S) as server:
        s = socket.create_connection(server.address, timeout=5)
        try:
            s.sendall(b"GET /metr")
            t0 = time.monotonic()
            s.settimeout(10)
            try:
                data = s.recv(1024)
            except ConnectionResetError:
                data = b""
            assert data == b"" or data.startswith(b"HTTP/1.")  # closed (or told off), not left hanging
            assert time.monotonic() - t0 < 5 * IDLE_TIMEOUT_S
        finally:
            s.close()


def test_defaults_are_bounded():
    server = MetricsServer(Metrics(), listen="127.0.0.1:0")
    assert 0 < server.max_connections <= 64
    assert 0 < server.timeout_s <= 30
