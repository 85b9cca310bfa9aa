"""Commit-to-delivery latency of the sinks at a steady frame rate (issue 14: target <= 5 ms median
for MQTT, Modbus and OPC UA on loopback).

For each sink, on its own (--together: all four at once, as a plant might configure them): a
SQLite results database with the outbox on, the real sink worker and a real receiver on
127.0.0.1, and one verdict recorded every 1/fps seconds through ``ResultStore.record`` (the
daemon's writer path, one commit per frame). Two numbers per sink:

- ``deliver``: from the commit (the store's own timestamp) until the sink's ``deliver`` returned:
  MQTT: the broker's PUBACK; webhook: the HTTP 2xx; Modbus, OPC UA: the server's values updated.
- ``receiver``: from the commit until the receiver had it, where a receiver can tell: an MQTT
  subscriber's on_message, the webhook server's handler. (A Modbus or OPC UA client polls or
  samples at its own interval, which would be that interval, not the sink's latency.)

The first ``--warmup`` frames are left out. Results go to stdout and ``--out`` (JSON).

    python benchmarks/bench_sinks.py [--fps 20] [--frames 400] [--sinks mqtt,modbus,opcua,webhook] [--together]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], q: float):
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 3)


class Receivers:
    """A Mosquitto broker + subscriber and a webhook server; each records arrival times by inspection id."""

    def __init__(self, tmp: Path):
        self.arrived: dict[str, dict[int, float]] = {"mqtt": {}, "webhook": {}}
        self.tmp = tmp
        self.broker = None
        self.sub = None
        self.http = None

    def start_mqtt(self) -> int:
        import paho.mqtt.client as mqtt

        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        port = free_port()
        conf = self.tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n" + ("user root\n" if os.geteuid() == 0 else ""))
        self.broker = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        got = threading.Event()
        self.sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.sub.on_message = lambda c, u, m: self.arrived["mqtt"].setdefault(json.loads(m.payload)["inspection_id"],
                                                                             time.monotonic())
        self.sub.on_subscribe = lambda *a: got.set()
        self.sub.connect("127.0.0.1", port)
        self.sub.subscribe("bench/+/verdict", qos=1)
        self.sub.loop_start()
        got.wait(10)
        return port

    def start_webhook(self) -> str:
        arrived = self.arrived["webhook"]

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                arrived.setdefault(json.loads(body)["inspection_id"], time.monotonic())
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.http.daemon_threads = True
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.http.server_address[1]}/hook"

    def close(self) -> None:
        if self.sub is not None:
            self.sub.loop_stop()
            self.sub.disconnect()
        if self.broker is not None:
            self.broker.terminate()
            self.broker.wait(10)
        if self.http is not None:
            self.http.shutdown()


def verdict(i: int):
    import numpy as np

    from inspector.types import Frame, Region, Verdict, VerdictKind

    fail = i % 10 == 0
    frame = Frame(id=f"cam1:{i}", source="cam1", captured_at=datetime.now(timezone.utc),
                  image=np.zeros((8, 8, 3), np.uint8), origin_path=f"/inbox/p{i}.png", key=f"k{i}")
    return Verdict(frame=frame, kind=VerdictKind.FAIL if fail else VerdictKind.PASS, score=0.9 if fail else 0.2,
                   threshold=0.5, regions=(Region(10, 10, 20, 20, 300, 0.95),) if fail else (),
                   timings_ms={"total": 30.0, "inference": 20.0})


def run(sink_names: list[str], args, tmp: Path) -> dict:
    from inspector.settings import settings_from_dict
    from inspector.sinks.manager import SinkContext, SinkManager
    from inspector.storage import ResultStore

    rx = Receivers(tmp)
    sinks = []
    for name in sink_names:
        if name == "mqtt":
            sinks.append({"type": "mqtt", "host": "127.0.0.1", "port": rx.start_mqtt(), "prefix": "bench"})
        elif name == "webhook":
            sinks.append({"type": "webhook", "url": rx.start_webhook()})
        elif name == "modbus":
            sinks.append({"type": "modbus", "listen": f"127.0.0.1:{free_port()}"})
        elif name == "opcua":
            sinks.append({"type": "opcua", "listen": f"127.0.0.1:{free_port()}"})
    settings = settings_from_dict({"sources": [{"name": "cam1", "inbox": str(tmp)}], "sinks": sinks}, base_dir=tmp)
    db = tmp / f"bench-{'-'.join(sink_names)}.db"
    store = ResultStore(f"sqlite:///{db}")
    store.ensure_schema()
    mgr = SinkManager(settings.sinks, store, SinkContext(["cam1"], "bench"))
    mgr.start()
    try:
        deadline = time.monotonic() + 90
        while not all(w.state == "connected" for w in mgr.workers):
            if time.monotonic() > deadline:
                raise SystemExit(f"sinks did not come up: {mgr.status()}")
            time.sleep(0.05)
        committed: dict[int, float] = {}
        period = 1.0 / args.fps
        t_next = time.monotonic()
        for i in range(args.frames):
            inspection_id = store.record(verdict(i), frame_key=f"k{i}", heatmap_path=None)
            committed[inspection_id] = time.monotonic()
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        time.sleep(2.0)
        out = {}
        for w in mgr.workers:
            lat = list(w.latencies_ms)[args.warmup:]
            res = {"deliver_ms": {"n": len(lat), "median": pct(lat, 0.5), "p95": pct(lat, 0.95), "max": pct(lat, 1.0)}}
            arrived = rx.arrived.get(w.sink.kind)
            if arrived is not None and arrived:
                ids = sorted(committed)[args.warmup:]
                rl = [(arrived[k] - committed[k]) * 1000.0 for k in ids if k in arrived]
                res["receiver_ms"] = {"n": len(rl), "median": pct(rl, 0.5), "p95": pct(rl, 0.95), "max": pct(rl, 1.0)}
            res["delivered"] = w.delivered
            out[w.name] = res
        return out
    finally:
        mgr.stop()
        store.close()
        rx.close()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--frames", type=int, default=400)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--sinks", default="mqtt,modbus,opcua,webhook")
    p.add_argument("--together", action="store_true", help="all sinks at once instead of one at a time")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    names = [s.strip() for s in args.sinks.split(",") if s.strip()]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-sinks-") as tmp:
        groups = [names] if args.together else [[n] for n in names]
        for group in groups:
            results.update(run(group, args, Path(tmp)))
    report = {"fps": args.fps, "frames": args.frames, "warmup": args.warmup, "together": args.together,
              "cpu": cpu_model(), "cores": os.cpu_count(),
              "loadavg_1m": round(os.getloadavg()[0], 2), "results": results}
    for name, r in results.items():
        line = f"{name:<8} commit->deliver median {r['deliver_ms']['median']} ms, p95 {r['deliver_ms']['p95']} ms"
        if "receiver_ms" in r:
            line += f"; commit->receiver median {r['receiver_ms']['median']} ms, p95 {r['receiver_ms']['p95']} ms"
        print(line + f" (n={r['deliver_ms']['n']})")
    print(f"load average (1 min) at the end: {report['loadavg_1m']}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
