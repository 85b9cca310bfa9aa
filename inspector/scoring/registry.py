"""The one table from a bundle's scorer (``type``, ``method``) to the runtime class (imported lazily).

``type`` is the family (the config's ``scorer.type``), ``method`` the algorithm within it
(``scorer.method``, saved in the bundle's scorer params). A bundle without a method gets its
family's first one (bundles written before methods existed were all PatchCore).
"""
from __future__ import annotations

import importlib

import numpy as np

SCORERS: dict[tuple[str, str], str] = {
    ("memory_bank", "patchcore"): "inspector.scoring.memory_bank:MemoryBankScorer",
    ("memory_bank", "padim"): "inspector.scoring.padim:PadimScorer",
    ("hypersphere", "deep_svdd"): "inspector.scoring.hypersphere:DeepSvddScorer",
    ("hypersphere", "ocsvm"): "inspector.scoring.hypersphere:OcsvmScorer",
    ("reconstruction", "autoencoder"): "inspector.scoring.reconstruction:AutoencoderScorer",
}


def default_method(scorer_type: str) -> str | None:
    return next((m for t, m in SCORERS if t == scorer_type), None)


def scorer_class(scorer_type: str, method: str | None = None):
    method = method or default_method(scorer_type)
    try:
        target = SCORERS[(scorer_type, method)]
    except KeyError:
        known = sorted(f"{t}/{m}" for t, m in SCORERS)
        raise KeyError(f"no scorer registered for type {scorer_type!r} method {method!r}; known: {known}") from None
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)


def scorer_from_bundle(scorer_type: str, params: dict, arrays: dict[str, np.ndarray], precision: str | None = None):
    """The runtime scorer; ``precision`` is the engine's: scorers that search (the memory bank)
    search at it, so calibration and the line score the same way."""
    scorer = scorer_class(scorer_type, params.get("method")).from_bundle(params, arrays)
    if precision is not None and hasattr(scorer, "set_search_precision"):
        scorer.set_search_precision(precision)
    return scorer
