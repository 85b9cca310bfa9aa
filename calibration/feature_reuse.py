"""Golden features shared between calibrations that would extract the very same ones.

``calibrate --auto`` calibrates several methods at each geometry, then the winner in full: each
would run the same golden images through the same network again. A calibration given a
``FeatureReuse`` keeps its features (and the held-out images' tile outputs, calibration/tile_memo.py)
under a key naming everything they depend on — the golden set (its hash, names and held-out split),
the preprocessing, the network and the engine's kind and precision — and a later one with the same
key takes them instead of extracting.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Extracted:
    feats: np.ndarray  # float32 [N, D, h, w], every golden image
    tiles: dict  # TileMemo outputs: the held-out images' tiles by input hash


def reuse_key(preprocess: dict, network: dict, engine, golden, hold_idx: np.ndarray) -> str:
    text = json.dumps({"preprocess": preprocess, "network": network, "engine": [engine.kind, engine.precision],
                       "golden": [golden.sha256, list(golden.names)], "holdout": [int(i) for i in hold_idx]},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class FeatureReuse:
    """``used``: every key got or put, in order (which extractions a calibration used: with
    ``preprocess.align.enabled: auto`` a turning part's calibration uses two)."""

    def __init__(self):
        self._kept: dict[str, Extracted] = {}
        self.used: list[str] = []

    def get(self, key: str) -> Optional[Extracted]:
        self.used.append(key)
        return self._kept.get(key)

    def put(self, key: str, feats: np.ndarray, tiles: dict) -> None:
        feats.flags.writeable = False  # shared: a fit that wrote into it would change the next one's
        self.used.append(key)
        self._kept[key] = Extracted(feats, tiles)

    def retain(self, keys) -> None:
        """Drop every extraction but those of ``keys`` (their memory goes before the winner's calibration)."""
        keep = set(keys)
        self._kept = {k: v for k, v in self._kept.items() if k in keep}

    def keys(self) -> list[str]:
        return list(self._kept)
