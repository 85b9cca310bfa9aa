"""The webhook sink against a local HTTP server: body, headers, HMAC, retries, a receiver that is
down or refusing, a slow one that times out, verdict and source filters."""
from __future__ import annotations

import hashlib
import hmac
import json
import time

from tests.sink_fixtures import WebhookReceiver, free_port, record_verdict, sink_manager, wait_until


def _manager(tmp_path, sink: dict):
    return sink_manager(tmp_path, sink)


def _record(store, i, source="cam1", kind="fail"):
    return record_verdict(store, i, source, kind, score=0.7)


_wait = wait_until


def test_posts_signed_json_with_event_id(tmp_path, webhook_receiver, monkeypatch):
    monkeypatch.setenv("HOOK_KEY", "k3y")
    store, mgr = _manager(tmp_path, {"type": "webhook", "url": webhook_receiver.url + "?token=abc",
                                     "hmac_key": {"env": "HOOK_KEY"}, "headers": {"X-Line": "7"}})
    mgr.start()
    try:
        ids = [_record(store, i) for i in range(3)]
        _wait(lambda: len(webhook_receiver.requests) == 3, 15, "3 POSTs")
        for n, (headers, body) in enumerate(webhook_receiver.requests):
            event = json.loads(body)
            assert event["inspection_id"] == ids[n] and event["seq"] == n + 1 and event["verdict"] == "fail"
            want = "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["X-Inspector-Signature"], want)
            assert headers["X-Inspector-Event-Id"] == event["event_id"]
            assert headers["X-Inspector-Sequence"] == f"cam1:{n + 1}"
            assert headers["Content-Type"] == "application/json" and headers["X-Line"] == "7"
    finally:
        mgr.stop()
        store.close()


def test_server_errors_are_retried_until_taken(tmp_path):
    receiver = WebhookReceiver(status=lambda n: 500 if n <= 5 else 200)  # 4 quick tries, then later ones
    store, mgr = _manager(tmp_path, {"type": "webhook", "url": receiver.url, "retries": 3,
                                     "retry_backoff_s": 0.01})
    mgr.start()
    try:
        _record(store, 1)
        _record(store, 2)
        _wait(lambda: len(receiver.requests) == 2, 20, "both events")
        assert receiver.attempts == 7
        assert [json.loads(b)["seq"] for _, b in receiver.requests] == [1, 2]  # order kept
        assert "HTTP 500" in mgr.status()["webhook"]["last_error"]
    finally:
        mgr.stop()
        store.close()
        receiver.close()


def test_receiver_down_at_start_keeps_events_and_query_is_not_logged(tmp_path):
    port = free_port()
    store, mgr = _manager(tmp_path, {"type": "webhook", "url": f"http://127.0.0.1:{port}/in?secret=zz",
                                     "retries": 0})
    mgr.start()
    try:
        _record(store, 1)
        _wait(lambda: mgr.status()["webhook"]["last_error"] is not None, 10, "the error")
        st = mgr.status()["webhook"]
        assert st["backlog"] == 1 and "refused" in st["last_error"].lower() and "zz" not in st["last_error"]
    finally:
        mgr.stop()
        store.close()
    # the next start (same database) delivers it once a receiver is there
    receiver = WebhookReceiver(port=port)
    store, mgr = _manager(tmp_path, {"type": "webhook", "url": f"http://127.0.0.1:{port}/in"})
    mgr.start()
    try:
        _wait(lambda: len(receiver.requests) == 1, 15, "the kept event")
        assert json.loads(receiver.requests[0][1])["seq"] == 1
    finally:
        mgr.stop()
        store.close()
        receiver.close()


def test_a_slow_receiver_times_out_and_never_delays_recording(tmp_path):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    store, mgr = _manager(tmp_path, {"type": "webhook", "url": f"http://127.0.0.1:{silent.getsockname()[1]}/",
                                     "timeout_s": 0.5, "retries": 0})
    mgr.start()
    try:
        t0 = time.monotonic()
        for i in range(20):
            _record(store, i)
        assert time.monotonic() - t0 < 3.0
        _wait(lambda: "timed out" in (mgr.status()["webhook"]["last_error"] or ""), 10, "the timeout")
    finally:
        mgr.stop()
        store.close()
        silent.close()


def test_filters_by_verdict_and_source(tmp_path, webhook_receiver):
    store, mgr = _manager(tmp_path, {"type": "webhook", "url": webhook_receiver.url, "verdicts": ["fail"],
                                     "sources": ["cam2"]})
    mgr.start()
    try:
        _record(store, 1, "cam1", "fail")
        _record(store, 2, "cam2", "pass")
        _record(store, 3, "cam2", "fail")
        _wait(lambda: mgr.status()["webhook"]["backlog"] == 0 and webhook_receiver.requests, 15, "the fail of cam2")
        time.sleep(0.3)
        assert [json.loads(b)["frame_key"] for _, b in webhook_receiver.requests] == ["cam2-3"]
    finally:
        mgr.stop()
        store.close()


def test_restart_resumes_from_the_saved_cursor_on_sqlite_and_postgresql(tmp_path, db_url, webhook_receiver):
    """After a clean stop, delivered events are not sent again and the next start goes on from the
    saved cursor, numbering on (cursor and sequence live in the results database)."""
    sink = {"type": "webhook", "url": webhook_receiver.url}
    store, mgr = sink_manager(tmp_path, sink, db_url=db_url)
    mgr.start()
    record_verdict(store, 1)
    record_verdict(store, 2)
    wait_until(lambda: len(webhook_receiver.requests) == 2, 15, "2 POSTs")
    mgr.stop()
    store.close()
    store, mgr = sink_manager(tmp_path, sink, db_url=db_url)
    mgr.start()
    try:
        record_verdict(store, 3)
        wait_until(lambda: len(webhook_receiver.requests) == 3, 15, "the third POST")
        time.sleep(0.3)
        assert [json.loads(b)["seq"] for _, b in webhook_receiver.requests] == [1, 2, 3]
    finally:
        mgr.stop()
        store.close()
