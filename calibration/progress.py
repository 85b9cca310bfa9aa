"""Calibration's progress bars: tqdm on stderr, or nothing (tests, --quiet)."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from tqdm import tqdm

from calibration.methods import CallbackProgress


class Bar:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, total: Optional[int], desc: str, unit: str = "img"):
        # on a terminal, a live bar; in a log (journald, CI), a line every few seconds
        interval = 0.1 if sys.stderr.isatty() else 5.0
        return tqdm(total=total, desc=desc, unit=unit, disable=not self.enabled, leave=True, dynamic_ncols=True,
                    mininterval=interval)

    @contextmanager
    def steps(self, desc: str) -> Iterator[CallbackProgress]:
        """A bar counting a fit's steps, as the Progress a fitter reports to."""
        with self(None, desc, unit="step") as pb:
            yield CallbackProgress(pb.update, lambda n: setattr(pb, "total", n) or pb.refresh())


@contextmanager
def timed(times: dict[str, float], stage: str) -> Iterator[None]:
    """Record the block's wall time as ``times[stage]`` (seconds), when it completes."""
    t0 = time.perf_counter()
    yield
    times[stage] = time.perf_counter() - t0
