"""runtime.blas_threads caps numpy's BLAS threads process-wide (checked in a fresh process, as the
limit would otherwise leak into the rest of the test session)."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import daemon_env

SCRIPT = r"""
import json, sys
import numpy as np
from threadpoolctl import threadpool_info
from inspector.maththreads import limit_blas_threads
before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
limit_blas_threads(int(sys.argv[1]))
after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps([before, after]))
"""


def _threads(limit: int) -> tuple[list[int], list[int]]:
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(limit)], env={**daemon_env(), "OPENBLAS_NUM_THREADS": "2"},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    before, after = json.loads(p.stdout.strip().splitlines()[-1])
    return before, after


def test_limit_sets_blas_threads():
    before, after = _threads(1)
    assert before and all(n == 2 for n in before)  # numpy's BLAS is visible to threadpoolctl
    assert all(n == 1 for n in after)


def test_zero_leaves_the_library_default():
    before, after = _threads(0)
    assert after == before


def test_default_setting_is_one_thread():
    from inspector.settings import RuntimeConfig

    assert RuntimeConfig().blas_threads == 1
