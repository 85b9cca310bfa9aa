"""A seeded split of n rows into two shares (the trained heads' early-stopping validation, and
calibrate's held-out golden images); torch-free, so calibrate's imports do not pull torch in."""
from __future__ import annotations

import numpy as np


def split_rows(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows): at least one of each when n >= 2."""
    order = np.random.default_rng(seed).permutation(n)
    k = min(max(1, int(round(n * share))), n - 1) if n >= 2 else 0
    return np.sort(order[k:]), np.sort(order[:k])
