"""Sinks in the real daemon: the broker and the daemon killed mid-stream lose no event; sinks
that cannot connect never hold inspection back; status and metrics show every sink."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import daemon_env
from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, rows, wait_for, wait_rows
from tests.sink_fixtures import Mosquitto, Subscriber, free_port

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt missing: pip install 'inspector[line]'")


def _drop(ws, part_images, names):
    for n in names:
        drop_image(ws.inbox, n, part_images("scratch" if n.endswith("7.png") else None))


def test_broker_and_daemon_killed_mid_stream_no_event_lost(tmp_path, bundle_dir, part_images):
    """The issue's test: the broker goes away and the daemon is SIGKILLed mid-stream, both restart;
    after de-duplication by event id every verdict arrived exactly once, and a duplicate is always
    the same event (same id, same seq). The broker is stopped, not SIGKILLed: a SIGKILLed Mosquitto
    loses a message it has acknowledged (PUBACK, where any publisher's responsibility ends) but not
    yet written to its store or forwarded, which once failed this test on a loaded CI machine
    (21 of 22 events) through no fault of the daemon's."""
    broker = Mosquitto(persistent=True).start()
    sub = Subscriber(broker.port, "line/+/verdict", persistent=True)
    ws = make_workspace(tmp_path, bundle_dir, source={"name": "cam1"},
                        extra={"sinks": [{"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "prefix": "line",
                                          "timeout_s": 2}]})
    d = Daemon(ws)
    try:
        d.start().wait_ready(120)
        _drop(ws, part_images, [f"a{i}.png" for i in range(8)])
        sub.wait(lambda s: len(s.verdicts()) >= 3, 60, "the first verdicts")
        broker.stop()  # mid-stream: the rest of batch a, and batch b, are inspected with no broker
        _drop(ws, part_images, [f"b{i}.png" for i in range(8)])
        wait_rows(ws, 12, 120, d)
        d.kill()  # SIGKILL, with frames possibly in flight and events undelivered
        broker.start()
        d.start().wait_ready(120)
        _drop(ws, part_images, [f"c{i}.png" for i in range(6)])
        recorded = wait_rows(ws, 22, 180, d)
        sub.wait(lambda s: len({v["event_id"] for v in s.verdicts()}) >= 22, 120, "an event for every verdict")
        time.sleep(1.0)  # anything more would be a duplicate or a stray
    finally:
        d.stop()
        sub.close()
        broker.cleanup()
    events = sub.verdicts()
    by_inspection: dict[int, set] = {}
    by_id: dict[str, tuple] = {}
    for e in events:
        by_inspection.setdefault(e["inspection_id"], set()).add(e["event_id"])
        key = (e["inspection_id"], e["seq"], e["frame_key"], e["verdict"])
        assert by_id.setdefault(e["event_id"], key) == key  # a duplicate is the very same event
    assert sorted(by_inspection) == sorted(r["id"] for r in recorded)  # none lost, none extra
    assert all(len(ids) == 1 for ids in by_inspection.values())  # one event id per verdict
    assert sorted({e["seq"] for e in events}) == list(range(1, 23))  # no gap in the sequence
    assert {r["origin_name"] for r in recorded} == {f"{b}{i}.png" for b, n in (("a", 8), ("b", 8), ("c", 6))
                                                    for i in range(n)}


def test_sinks_that_cannot_connect_never_hold_inspection_back(tmp_path, bundle_dir, part_images):
    from tests.sink_fixtures import WebhookReceiver

    hook = WebhookReceiver()
    dead = free_port()  # nothing listens here
    modbus, opcua, metrics_port = free_port(), free_port(), free_port()
    ws = make_workspace(tmp_path, bundle_dir, source={"name": "cam1"}, extra={
        "metrics": {"listen": f"0.0.0.0:{metrics_port}", "interface": "lo"},  # the interface names the address
        "sinks": [{"type": "mqtt", "host": "127.0.0.1", "port": dead, "timeout_s": 1},
                  {"type": "webhook", "name": "erp", "url": f"http://127.0.0.1:{dead}/x", "retries": 0},
                  {"type": "webhook", "name": "mes", "url": hook.url, "verdicts": ["fail"]},
                  {"type": "modbus", "listen": f"127.0.0.1:{modbus}"},
                  {"type": "opcua", "listen": f"127.0.0.1:{opcua}"}]})
    d = Daemon(ws)
    try:
        d.start().wait_ready(120)
        _drop(ws, part_images, ["g1.png", "g2.png", "s7.png"])
        recorded = wait_rows(ws, 3, 120, d)
        wait_for(lambda: len(hook.requests) >= sum(r["verdict"] == "fail" for r in recorded), 30,
                 "the fails at the reachable webhook", d)

        def status():
            p = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(ws.config),
                                "--format", "json"], capture_output=True, text=True, env=daemon_env(), timeout=60)
            return json.loads(p.stdout)["daemon"].get("sinks", {})

        # asyncua builds its address space before serving: seconds on a busy machine
        wait_for(lambda: (lambda st: st.get("modbus", {}).get("backlog") == 0 and st.get("opcua", {}).get("backlog")
                          == 0 and st.get("erp", {}).get("last_error") is not None)(status()), 90,
                 "the sinks' status", d)
        st = status()
        assert set(st) == {"mqtt", "erp", "mes", "modbus", "opcua"}
        assert st["mqtt"]["state"] in ("failing", "connecting") and st["mqtt"]["backlog"] == 3
        assert str(dead) in st["mqtt"]["last_error"] and st["erp"]["backlog"] == 3
        assert st["modbus"]["state"] in ("connected", "delivering") and st["opcua"]["backlog"] == 0
        text = subprocess.run([sys.executable, "-m", "inspector", "status", "--config", str(ws.config)],
                              capture_output=True, text=True, env=daemon_env(), timeout=60).stdout
        assert "sinks" in text and "erp" in text and "last error" in text
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert 'inspector_sink_backlog_events{sink="mqtt"} 3' in body
        assert 'inspector_sink_up{sink="modbus",type="modbus"} 1' in body
        log = d.log_text()
        # one line per incident, however many retries
        assert log.count("sink mqtt: cannot connect") == 1 and log.count("sink erp: cannot deliver") == 1
        assert d.terminate() == 0
    finally:
        d.stop()
        hook.close()
    assert len(rows(ws.db)) == 3
