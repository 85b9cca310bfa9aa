"""The Modbus TCP sink served by the daemon's side, read by a real pymodbus client: register and
coil layout per source, sequence numbers, writes refused, loopback by default, the last state
shown again after a restart."""
from __future__ import annotations

import struct
import time

import pytest

from tests.sink_fixtures import free_port, record_verdict, sink_manager

pytest.importorskip("pymodbus", reason="pymodbus missing: pip install 'inspector[line]'")


def _record(store, i, source="cam1", kind="fail", score=0.8127):
    return record_verdict(store, i, source, kind, score, regions=((1, 2, 3, 4, 12, 0.9),) * (2 if kind == "fail" else 0))


def _client(port):
    from pymodbus.client import ModbusTcpClient

    c = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    deadline = time.monotonic() + 15
    while not c.connect():
        assert time.monotonic() < deadline, "the Modbus server did not come up"
        time.sleep(0.1)
    return c


def _regs(c, address, count=16, fc=3):
    read = c.read_holding_registers if fc == 3 else c.read_input_registers
    r = read(address, count=count, device_id=1)
    assert not r.isError(), r
    return r.registers


def _wait_seq(c, base, seq, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = _regs(c, base, 2)
        if (r[0] << 16 | r[1]) == seq:
            return
        time.sleep(0.02)
    raise AssertionError(f"sequence {seq} not shown at {base}")


def test_last_verdict_per_source_in_registers_and_coils(tmp_path):
    port = free_port()
    store, mgr = sink_manager(tmp_path, {"type": "modbus", "listen": f"127.0.0.1:{port}", "blocks": {"cam2": 100}})
    mgr.start()
    c = _client(port)
    try:
        _record(store, 1, kind="pass", score=0.25)
        _record(store, 2, kind="fail")
        _record(store, 1, source="cam2", kind="pass", score=0.5)
        _wait_seq(c, 0, 2)
        _wait_seq(c, 100, 1)
        r = _regs(c, 0)
        assert r[2] == 2 and r[3] == 813 and r[4] == 500 and r[5] == 2  # fail, score x1000, threshold, regions
        assert (r[6] << 16 | r[7], r[8] << 16 | r[9], r[10] << 16 | r[11]) == (1, 1, 0)  # pass, fail, error so far
        assert struct.unpack(">f", struct.pack(">HH", r[12], r[13]))[0] == pytest.approx(0.8127)
        assert _regs(c, 0, fc=4) [:14] == r[:14]  # input registers mirror the holding ones
        assert c.read_coils(0, count=3, device_id=1).bits[:3] == [True, False, False]  # reject
        assert c.read_coils(100, count=3, device_id=1).bits[:3] == [False, True, False]
        assert c.read_discrete_inputs(0, count=3, device_id=1).bits[:3] == [True, False, False]
        r2 = _regs(c, 100)
        assert r2[2] == 1 and r2[3] == 500
        beat = r[14]
        time.sleep(2.2)
        assert _regs(c, 0)[14] > beat  # heartbeat: the daemon is alive
        # nothing a client writes is taken
        for resp in (c.write_register(0, 7, device_id=1), c.write_registers(100, [1, 2], device_id=1),
                     c.write_coil(0, False, device_id=1)):
            assert resp.isError()
        assert _regs(c, 0)[:2] == [0, 2] and c.read_coils(0, count=1, device_id=1).bits[0] is True
        assert _regs(c, 0, 2)[:2] == [0, 2]
        assert mgr.status()["modbus"]["state"] in ("connected", "delivering")
    finally:
        c.close()
        mgr.stop()
        store.close()
    # after a restart the last state is shown again, before any new verdict
    store, mgr = sink_manager(tmp_path, {"type": "modbus", "listen": f"127.0.0.1:{port}", "blocks": {"cam2": 100}})
    mgr.start()
    c = _client(port)
    try:
        _wait_seq(c, 0, 2)
        assert _regs(c, 0)[2] == 2 and _regs(c, 100)[2] == 1
        _record(store, 3, kind="error", score=None)
        _wait_seq(c, 0, 3)
        assert _regs(c, 0)[2] == 3 and c.read_coils(0, count=3, device_id=1).bits[:3] == [False, False, True]
    finally:
        c.close()
        mgr.stop()
        store.close()


def test_binds_loopback_by_default_and_a_taken_port_does_not_stop_recording(tmp_path):
    import socket

    from inspector.sinks.listen import bind_address

    assert bind_address("5020", None) == ("127.0.0.1", 5020)
    assert bind_address("0.0.0.0:5020", "lo") == ("127.0.0.1", 5020)  # an interface names its address
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    store, mgr = sink_manager(tmp_path, {"type": "modbus", "listen": f"{port}"})
    mgr.start()
    try:
        _record(store, 1)
        deadline = time.monotonic() + 10
        while mgr.status()["modbus"]["last_error"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        st = mgr.status()["modbus"]
        assert f"127.0.0.1:{port}" in st["last_error"] and st["backlog"] == 1
    finally:
        mgr.stop()
        store.close()
        taken.close()
