"""Modbus TCP server sink (pymodbus), for PLCs that only speak Modbus.

Per source, a block of 16 registers and 16 coils starting at the source's base address
(``blocks``, default: sources in config order at 0, 16, 32, ...). Holding registers (FC 3) and
input registers (FC 4) hold the same values; coils (FC 1) and discrete inputs (FC 2) too.

======  ==========================================================================
offset  holding / input register (16-bit; 32-bit values high word first)
======  ==========================================================================
0-1     sequence number of the last verdict (uint32; changes with every verdict)
2       last verdict: 0 none yet, 1 pass, 2 fail, 3 error
3       score x 1000 (uint16, clipped to 0..65535)
4       threshold x 1000 (uint16, clipped)
5       defect region count
6-7     passes so far (uint32)        8-9  fails (uint32)       10-11  errors (uint32)
12-13   score as IEEE 754 float32
14      heartbeat: seconds since the server started, wrapping at 65536 (the daemon is alive)
15      reserved (0)
======  ==========================================================================

Coils: offset 0 = the last verdict is fail (reject the part), 1 = pass, 2 = error.

A PLC polls and acts when the sequence number changes; a jump by more than one means it missed
a verdict between two polls (Modbus has no push). Every write (FC 5, 6, 15, 16, 22, 23) is
answered with an exception: nothing a client sends reaches the daemon. Any unit id is answered.
"""
from __future__ import annotations

import logging
import struct
import time
from typing import Optional

from inspector.sinks.base import SinkError, require
from inspector.sinks.config import ModbusSinkConfig
from inspector.sinks.listen import bind_address
from inspector.sinks.loop import LoopThread
from inspector.sinks.manager import SinkContext
from inspector.storage.outbox import Event

log = logging.getLogger("inspector.sinks.modbus")

BLOCK = 16
VERDICT_CODES = {"pass": 1, "fail": 2, "error": 3}
_WRITE_CODES = frozenset({5, 6, 15, 16, 22, 23})
_BIT_CODES = frozenset({1, 2})


def _u32(v: int) -> list[int]:
    v = int(v) & 0xFFFFFFFF
    return [v >> 16, v & 0xFFFF]


def _milli(v: Optional[float]) -> int:
    return 0 if v is None else max(0, min(65535, int(round(v * 1000))))


def source_registers(data: dict) -> list[int]:
    """The 16 registers of one source for event ``data`` (see the module docstring)."""
    counts = data.get("counts") or {}
    score = data.get("score")
    f32 = struct.unpack(">HH", struct.pack(">f", float(score) if score is not None else float("nan")))
    return (_u32(data["seq"]) + [VERDICT_CODES.get(data.get("verdict"), 0), _milli(score),
                                 _milli(data.get("threshold")), min(65535, len(data.get("regions") or ()))]
            + _u32(counts.get("pass", 0)) + _u32(counts.get("fail", 0)) + _u32(counts.get("error", 0))
            + list(f32) + [0, 0])


class ModbusSink:
    kind = "modbus"

    def __init__(self, config: ModbusSinkConfig, context: SinkContext):
        require("pymodbus", f"{config.name} (modbus)")
        self.config = config
        self.name = config.name
        blocks = dict(config.blocks)
        free = (b for b in range(0, 65536, BLOCK) if b not in blocks.values())
        for name in context.source_names:
            if name not in blocks:
                blocks[name] = next(free)
        self.blocks = blocks
        size = max(blocks.values(), default=0) + BLOCK
        self._registers = [0] * size  # replaced whole on each update: the server thread copies a consistent list
        self._bits = [0] * ((size + 15) // 16)  # coils, 16 per register word (pymodbus bit addressing)
        self._loop: Optional[LoopThread] = None
        self._server = None
        self._started = time.monotonic()
        self.address: Optional[tuple[str, int]] = None

    # ------------------------------------------------------------ the server (its own thread and loop)
    async def _action(self, function_code, _start, _address, _count, registers, values):
        from pymodbus.constants import ExcCodes

        if function_code in _WRITE_CODES or values:
            return ExcCodes.ILLEGAL_FUNCTION
        src = self._bits if function_code in _BIT_CODES else self._registers
        registers[:len(src)] = src
        return None

    def _device(self):
        from pymodbus.simulator import DataType, SimData, SimDevice

        n = len(self._registers)

        def bits():
            return [SimData(0, count=len(self._bits) * 16, values=False, datatype=DataType.BITS, readonly=True)]

        def regs():
            return [SimData(0, count=n, values=0, datatype=DataType.REGISTERS, readonly=True)]

        # id 0: answer whatever unit id the PLC is configured with
        return SimDevice(id=0, simdata=(bits(), bits(), regs(), regs()), action=self._action)

    async def _serve(self, host: str, port: int) -> None:
        from pymodbus.server import ModbusTcpServer

        self._server = ModbusTcpServer(self._device(), address=(host, port))  # needs the running loop
        await self._server.serve_forever(background=True)

    def open(self) -> None:
        host, port = bind_address(self.config.listen, self.config.interface)
        self._loop = LoopThread(f"sink-{self.name}-server")
        try:
            self._loop.run(self._serve(host, port), 10)
        except Exception as exc:
            self.close()
            raise SinkError(f"cannot serve Modbus TCP on {host}:{port} ({exc})") from None
        self.address = (host, port)
        log.info("sink %s: Modbus TCP server on %s:%d (read-only; sources at %s)", self.name, host, port,
                 ", ".join(f"{k}={v}" for k, v in self.blocks.items()))

    def deliver(self, events: list[Event]) -> None:
        regs = list(self._registers)
        bits = list(self._bits)
        for e in events:
            base = self.blocks.get(e.source)
            if base is None:
                continue  # a source no longer configured
            regs[base:base + BLOCK] = source_registers(e.data)
            regs[base + 14] = self._registers[base + 14]
            verdict = e.data.get("verdict")
            for k, name in enumerate(("fail", "pass", "error")):
                word, bit = divmod(base + k, 16)
                bits[word] = bits[word] | (1 << bit) if verdict == name else bits[word] & ~(1 << bit)
        self._bits = bits
        self._registers = regs

    def restore(self, latest: list[Event]) -> None:
        self.deliver(latest)

    def tick(self) -> None:
        beat = int(time.monotonic() - self._started) & 0xFFFF
        regs = list(self._registers)
        for base in self.blocks.values():
            regs[base + 14] = beat
        self._registers = regs

    def close(self) -> None:
        loop, server = self._loop, self._server
        self._loop = self._server = None
        if loop is not None:
            loop.close(server.shutdown if server is not None else None, f"sink {self.name}")
