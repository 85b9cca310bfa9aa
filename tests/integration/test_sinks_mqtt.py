"""The MQTT sink against a real Mosquitto broker: topics, last will, acknowledgement, a broker that
is down at start or goes away, credentials read from a file."""
from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path

import pytest

from inspector.metrics import Metrics
from tests.sink_fixtures import Mosquitto, Subscriber, free_port, record_verdict, sink_manager, wait_until

pytest.importorskip("paho.mqtt.client", reason="paho-mqtt missing: pip install 'inspector[line]'")


def _manager(tmp_path, sink: dict, *, metrics=None, stats=None):
    return sink_manager(tmp_path, sink, sources=("cam1", "line/2"), metrics=metrics, stats=stats)


def _record(store, i, source="cam1", kind="fail"):
    return record_verdict(store, i, source, kind, score=0.9, regions=((1, 2, 3, 4, 12, 0.95),))


_wait = wait_until


def test_verdicts_available_and_stats_reach_a_subscriber(tmp_path, mosquitto):
    sub = Subscriber(mosquitto.port, "plant/#")
    metrics = Metrics()
    store, mgr = _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": mosquitto.port, "prefix": "plant",
                                     "stats_interval_s": 1}, metrics=metrics)
    mgr.start()
    try:
        ids = [_record(store, i) for i in range(3)] + [_record(store, 0, source="line/2", kind="pass")]
        sub.wait(lambda s: len(s.verdicts()) == 4 and s.on("plant/stats"), 15, "4 verdicts and a stats message")
        assert sub.on("plant/available")[0] == b"online"
        got = sub.verdicts()
        assert [(v["source"], v["seq"], v["inspection_id"]) for v in got] == [
            ("cam1", 1, ids[0]), ("cam1", 2, ids[1]), ("cam1", 3, ids[2]), ("line/2", 1, ids[3])]
        assert {t for t, _, _ in sub.messages if t.endswith("/verdict")} == {"plant/cam1/verdict",
                                                                             "plant/line_2/verdict"}
        v = got[0]
        assert v["verdict"] == "fail" and v["score"] == 0.9 and v["threshold"] == 0.5 and v["regions"][0]["area"] == 12
        assert set(v) >= {"event_id", "frame_key", "heatmap_path", "timings_ms", "bundle_id", "captured_at"}
        assert json.loads(sub.on("plant/stats")[0]) == {"frames_processed": 7}
        st = mgr.status()["mqtt"]
        assert st["state"] in ("connected", "delivering") and st["backlog"] == 0 and st["delivered"] == 4
        text = metrics.render()
        assert 'inspector_sink_delivered_total{sink="mqtt"} 4' in text and 'inspector_sink_up{sink="mqtt",type="mqtt"} 1' in text
    finally:
        mgr.stop()
        store.close()
    sub.wait(lambda s: s.on("plant/available")[-1:] == [b"offline"], 5, "offline at stop")
    sub.close()


def test_last_will_says_offline_when_the_daemon_vanishes(tmp_path, mosquitto):
    sub = Subscriber(mosquitto.port, "inspector/available")
    script = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from tests.integration.test_sinks_mqtt import _manager
from pathlib import Path
store, mgr = _manager(Path({str(tmp_path)!r}), {{"type": "mqtt", "host": "127.0.0.1", "port": {mosquitto.port},
                                               "keepalive_s": 5}})
mgr.start()
time.sleep(60)
"""
    proc = subprocess.Popen(["python", "-c", script])
    try:
        sub.wait(lambda s: s.on("inspector/available")[-1:] == [b"online"], 20, "online")
        proc.kill()  # no clean disconnect: the broker sends the will when the socket closes
        sub.wait(lambda s: s.on("inspector/available")[-1:] == [b"offline"], 10, "the last will")
    finally:
        proc.kill()
        proc.wait()
        sub.close()


def test_broker_down_at_start_then_up_delivers_the_backlog_and_logs_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="inspector.sinks")
    broker = Mosquitto()
    store, mgr = _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "timeout_s": 2})
    mgr.start()  # nothing listens yet: start returns all the same
    try:
        t0 = time.monotonic()
        for i in range(5):
            _record(store, i)  # inspection goes on: recording never waits for the sink
        assert time.monotonic() - t0 < 2.0
        _wait(lambda: mgr.status()["mqtt"]["last_error"] is not None, 10, "the sink's error")
        time.sleep(2.0)  # a few more failed attempts
        st = mgr.status()["mqtt"]
        assert st["state"] in ("failing", "connecting") and st["backlog"] == 5
        assert "Connection refused" in st["last_error"] and str(broker.port) in st["last_error"]
        broker.start()
        sub = Subscriber(broker.port, "inspector/+/verdict")
        _record(store, 5)
        sub.wait(lambda s: len(s.verdicts()) == 6, 40, "the backlog after the broker came up")
        assert [v["seq"] for v in sub.verdicts()] == [1, 2, 3, 4, 5, 6]
        _wait(lambda: mgr.status()["mqtt"]["backlog"] == 0, 5, "no backlog")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "sink mqtt" in r.getMessage()]
        assert len(errors) == 1, [r.getMessage() for r in errors]  # one incident, one line
        assert any("recovered after" in r.getMessage() for r in caplog.records)
        sub.close()
    finally:
        mgr.stop()
        store.close()
        broker.cleanup()


def test_broker_restart_loses_nothing(tmp_path):
    broker = Mosquitto(persistent=True).start()
    sub = Subscriber(broker.port, "inspector/+/verdict", persistent=True)
    store, mgr = _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "timeout_s": 2})
    mgr.start()
    try:
        for i in range(10):
            _record(store, i)
            if i == 4:
                sub.wait(lambda s: len(s.verdicts()) >= 3, 10, "some verdicts")
                broker.kill()
        time.sleep(1.0)
        broker.start()
        sub.wait(lambda s: len({v["event_id"] for v in s.verdicts()}) == 10, 60, "all 10 events")
        seqs = sorted({v["seq"] for v in sub.verdicts()})
        assert seqs == list(range(1, 11))
        by_seq = {}
        for v in sub.verdicts():  # a duplicate is the same event: same id for the same seq
            assert by_seq.setdefault(v["seq"], v["event_id"]) == v["event_id"]
    finally:
        mgr.stop()
        store.close()
        sub.close()
        broker.cleanup()


def test_password_from_a_file_and_a_wrong_one_is_reported(tmp_path):
    passwd = tmp_path / "passwd"
    broker = Mosquitto(extra=f"password_file {passwd}\n")  # skips, saying why, where Mosquitto is not installed
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "line", "s3cret"], check=True,
                   capture_output=True)
    passwd.chmod(0o644)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    (tmp_path / "pw").write_text("s3cret\n")
    (tmp_path / "bad").write_text("badpass123\n")
    try:
        store, mgr = _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "username": "line",
                                         "password": {"file": "pw"}})
        mgr.start()
        _record(store, 1)
        _wait(lambda: mgr.status()["mqtt"]["delivered"] == 1, 15, "delivery with the right password")
        mgr.stop()
        store.close()
        (tmp_path / "r.db").unlink()
        store, mgr = _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": broker.port, "username": "line",
                                         "password": {"file": "bad"}})
        mgr.start()
        _wait(lambda: mgr.status()["mqtt"]["last_error"] is not None, 15, "the refusal")
        err = mgr.status()["mqtt"]["last_error"]
        assert "refused" in err and "Not authorized" in err and "badpass123" not in err
        mgr.stop()
        store.close()
    finally:
        broker.cleanup()


def test_an_unreadable_secret_refuses_the_start_in_one_line(tmp_path):
    from inspector.errors import ConfigError

    with pytest.raises(ConfigError, match=r"sink mqtt: password: environment variable NO_SUCH_VAR_X is not set"):
        _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": free_port(), "username": "u",
                            "password": {"env": "NO_SUCH_VAR_X"}})


def test_tls_broker_with_the_right_ca_and_a_wrong_one(tmp_path):
    from tests.sink_fixtures import make_tls_files

    ca, cert, key = make_tls_files(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    wrong_ca, _, _ = make_tls_files(other)
    broker = Mosquitto(extra=f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n").start()
    try:
        store, mgr = _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": broker.port,
                                         "tls": {"ca_file": str(ca)}})
        mgr.start()
        _record(store, 1)
        _wait(lambda: mgr.status()["mqtt"]["delivered"] == 1, 15, "delivery over TLS")
        mgr.stop()
        store.close()
        (tmp_path / "r.db").unlink()
        store, mgr = _manager(tmp_path, {"type": "mqtt", "host": "127.0.0.1", "port": broker.port,
                                         "tls": {"ca_file": str(wrong_ca)}, "timeout_s": 2})
        mgr.start()
        _wait(lambda: mgr.status()["mqtt"]["last_error"] is not None, 15, "the TLS refusal")
        assert "CERTIFICATE_VERIFY_FAILED" in mgr.status()["mqtt"]["last_error"]
        mgr.stop()
        store.close()
    finally:
        broker.cleanup()
