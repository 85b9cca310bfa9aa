"""The Source interface: something that produces Frames on its own thread(s)."""
from __future__ import annotations

from typing import Callable, Protocol, Union

from inspector.types import Frame

# emit(frame) -> True when the pipeline took the frame, False when its queue is full.
# Folder sources retry (they never drop a file); streams drop their oldest frame and count it.
Emit = Callable[[Frame], bool]


class Source(Protocol):
    name: str

    def start(self, emit: Emit) -> None:
        """Start the source's own thread(s); frames go to ``emit``."""

    def stop(self) -> None:
        """Stop threads, release devices, join."""

    def stats(self) -> dict[str, Union[int, float, str]]:
        """Counters for status/metrics: frames_read, frames_emitted, drops, reconnects, state."""
