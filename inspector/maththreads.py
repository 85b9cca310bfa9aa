"""How many threads the math libraries under the scorer may use while frames are inspected.

OpenBLAS (numpy's BLAS) defaults to one busy-waiting thread per core. In the daemon its threads
spin on the same two cores as the inference engine, decoding and the writer, and that cost a
third of the throughput: 129-144 frames/s with the default against 176-216 with one BLAS thread
(benchmarks/bench_throughput.py, docs/BENCHMARKS.md). The memory-bank kNN is one GEMM per frame:
one thread does it without waiting on others. The same limit goes to torch where the scorer uses it
(the bf16 search, inspector/methods/knn_bf16.py): two torch threads for it cost 150 vs 180 frames/s.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)

_limiter = None  # keeps the BLAS limit in force for the life of the process
_threads = 0  # the limit asked for (0: none)


def limit_blas_threads(threads: int) -> None:
    """Process-wide: at most ``threads`` BLAS threads, and torch's too once the scorer loads it
    (0 leaves the libraries' defaults)."""
    global _limiter, _threads
    if threads <= 0:
        return
    from threadpoolctl import threadpool_limits

    _threads = threads
    _limiter = threadpool_limits(limits=threads, user_api="blas")
    log.debug("BLAS threads limited to %d", threads)


def apply_to_torch() -> None:
    """Called by scorer code that imports torch: the same limit for torch's intra-op threads."""
    if _threads > 0:
        import torch

        torch.set_num_threads(_threads)
