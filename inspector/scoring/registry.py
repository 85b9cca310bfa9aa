"""The one table from a bundle's scorer ``type`` to the runtime class (imported lazily)."""
from __future__ import annotations

import importlib

import numpy as np

SCORERS: dict[str, str] = {
    "memory_bank": "inspector.scoring.memory_bank:MemoryBankScorer",
}


def scorer_from_bundle(scorer_type: str, params: dict, arrays: dict[str, np.ndarray]):
    try:
        target = SCORERS[scorer_type]
    except KeyError:
        raise KeyError(f"no scorer registered for type {scorer_type!r}; known: {sorted(SCORERS)}") from None
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls.from_bundle(params, arrays)
