"""Work on a thread beside the caller's: one step ahead (the next item made while the caller works on
this one), or one job in the background (calibrate's refit)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

from calibration.progress import timed

T = TypeVar("T")


def made_ahead(make: Callable[..., T], args: Sequence, name: str) -> Iterator[T]:
    """``make(a)`` for each ``a`` of ``args``, in order; each is made on one worker thread while
    the caller uses the previous one (NumPy, OpenCV and the engines release the GIL). One thread,
    so the calls run in order: a seeded generator inside ``make`` draws as it would one after
    another. Leaving early waits for the item being made."""
    if not len(args):
        return
    with ThreadPoolExecutor(1, thread_name_prefix=name) as pool:
        pending = pool.submit(make, args[0])
        for k in range(len(args)):
            item = pending.result()
            if k + 1 < len(args):
                pending = pool.submit(make, args[k + 1])
            yield item


class Background:
    """``fn`` run on a thread from entering; ``result()`` waits for it (and raises what it raised),
    and its wall time goes to ``times[stage]``. Leaving the block waits for the thread, so a failure
    elsewhere never leaves a fit running against arrays that are being freed."""

    def __init__(self, times: dict[str, float], stage: str, fn):
        self._times, self._stage, self._fn = times, stage, fn
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=stage)

    def __enter__(self) -> "Background":
        def run():
            with timed(self._times, self._stage):
                return self._fn()
        self._future = self._pool.submit(run)
        return self

    def result(self):
        return self._future.result()

    def done(self) -> bool:
        return self._future.done()

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)
