"""An asyncio event loop on its own thread, for the server sinks (OPC UA, Modbus): their
libraries are asyncio, the sink worker is a plain thread that hands them coroutines."""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import Awaitable, Callable, Optional

log = logging.getLogger("inspector.sinks")


class LoopThread:
    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable, timeout: float):
        """Run ``coro`` on the loop and wait for its result (its exception is raised here)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, stop_server: Optional[Callable[[], Awaitable]] = None, what: str = "server") -> None:
        """Stop the server (if any) on the loop, then the loop and its thread."""
        if stop_server is not None:
            try:
                self.run(stop_server(), 10)
            except Exception:  # stopping a broken server: nothing left to save
                log.debug("%s: stop failed", what, exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()
