"""One step ahead on a thread: the next item is made while the caller works on this one."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence, TypeVar

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
