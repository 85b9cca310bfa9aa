"""Metrics exposition: scraped over HTTP on 127.0.0.1 and parsed back."""
from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request

import pytest

from inspector.errors import ConfigError
from inspector.metrics import CONTENT_TYPE, Metrics, MetricsConfig, MetricsServer, parse_listen
from inspector.settings import settings_from_dict

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(name, {labels}): value}; checks every line is well formed."""
    out = {}
    types = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed line {line!r}"
        labels = frozenset(LABEL.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    assert types, "no # TYPE lines"
    return out


def scrape(url: str) -> tuple[str, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.headers["Content-Type"], r.read().decode()


def test_scrape_over_http_and_parse_back():
    m = Metrics()
    for _ in range(3):
        m.count_frame("cam1", "pass")
    m.count_frame("cam1", "fail")
    m.count_frame('odd "name"\n', "error")
    m.observe_stage("inference", 0.004)
    m.observe_stage("inference", 0.02)
    m.observe_timings_ms({"inference": 3000.0, "preprocess": 1.0})
    m.set_queue_depth(5)
    m.set_engine_info("onnxruntime", "fp32")
    m.set_engine_info("tensorrt", "fp16")  # replaces, never two engines
    stream_stats = {"reconnects": 2, "drops": 7, "state": "connected"}
    m.add_collector(lambda: m.update_stream_stats("line1", stream_stats))

    with MetricsServer(m, listen="127.0.0.1:0") as server:
        host, port = server.address
        assert port != 0
        ctype, body = scrape(f"http://{host}:{port}/metrics")
        stream_stats.update(reconnects=3, drops=5)  # drops going down (restart) never lowers the counter
        _, body2 = scrape(f"http://{host}:{port}/metrics")
        with pytest.raises(urllib.error.HTTPError) as err:
            scrape(f"http://{host}:{port}/nope")
        assert err.value.code == 404

    assert ctype == CONTENT_TYPE
    v = parse(body)
    L = lambda **kw: frozenset(kw.items())  # noqa: E731
    assert v[("inspector_frames_total", L(verdict="pass", source="cam1"))] == 3
    assert v[("inspector_frames_total", L(verdict="fail", source="cam1"))] == 1
    assert v[("inspector_frames_total", L(verdict="error", source='odd \\"name\\"\\n'))] == 1
    assert v[("inspector_stage_latency_seconds_count", L(stage="inference"))] == 3
    assert v[("inspector_stage_latency_seconds_sum", L(stage="inference"))] == pytest.approx(3.024)
    assert v[("inspector_stage_latency_seconds_bucket", L(stage="inference", le="0.005"))] == 1
    assert v[("inspector_stage_latency_seconds_bucket", L(stage="inference", le="0.025"))] == 2
    assert v[("inspector_stage_latency_seconds_bucket", L(stage="inference", le="2.5"))] == 2
    assert v[("inspector_stage_latency_seconds_bucket", L(stage="inference", le="+Inf"))] == 3
    assert v[("inspector_stage_latency_seconds_bucket", L(stage="preprocess", le="0.001"))] == 1
    assert v[("inspector_queue_depth", L(queue="inference"))] == 5
    assert ("inspector_engine_info", L(type="onnxruntime", precision="fp32")) not in v
    assert v[("inspector_engine_info", L(type="tensorrt", precision="fp16"))] == 1
    assert v[("inspector_stream_reconnects_total", L(source="line1"))] == 2
    assert v[("inspector_stream_drops_total", L(source="line1"))] == 7
    assert v[("inspector_stream_connected", L(source="line1"))] == 1
    assert v[("inspector_start_time_seconds", L())] > 1e9
    v2 = parse(body2)
    assert v2[("inspector_stream_reconnects_total", L(source="line1"))] == 3
    assert v2[("inspector_stream_drops_total", L(source="line1"))] == 7
    # histogram buckets are cumulative
    buckets = [val for (name, labels), val in v.items()
               if name.endswith("_bucket") and ("stage", "inference") in labels]
    assert buckets == sorted(buckets)


def test_counters_are_thread_safe():
    m = Metrics()

    def work():
        for _ in range(10_000):
            m.count_frame("s", "pass")
            m.observe_stage("total", 0.01)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.frames_total.value(source="s", verdict="pass") == 80_000
    assert m.stage_latency_seconds.count(stage="total") == 80_000


def test_wrong_labels_rejected():
    with pytest.raises(ValueError):
        Metrics().frames_total.inc(source="s")


@pytest.mark.parametrize("given, expected", [
    ("9464", ("127.0.0.1", 9464)),
    (":9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9464", ("::1", 9464)),
    ("metrics-host.local:80", ("metrics-host.local", 80)),
])
def test_parse_listen(given, expected):
    assert parse_listen(given) == expected


@pytest.mark.parametrize("bad", ["host:", "host:99999", "a:b", "[::1]9464", "bad host:1", "127.0.0.1:0"])
def test_parse_listen_rejects(bad):
    with pytest.raises(ValueError):
        parse_listen(bad)


def test_config_section(tmp_path):
    assert MetricsConfig().listen is None
    s = settings_from_dict({"metrics": {"listen": "9464"}}, base_dir=tmp_path)
    assert s.metrics.listen == "127.0.0.1:9464"
    with pytest.raises(ConfigError, match=r"metrics\.listen: .*port must be a number"):
        settings_from_dict({"metrics": {"listen": "localhost:http"}}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"metrics\.port: unknown key"):
        settings_from_dict({"metrics": {"port": 9464}}, base_dir=tmp_path)


def test_ipv6_loopback_server():
    try:
        server = MetricsServer(Metrics(), listen="[::1]:0")
        server.start()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    try:
        _, port = server.address
        _, body = scrape(f"http://[::1]:{port}/metrics")
        assert "inspector_start_time_seconds" in body
    finally:
        server.stop()
