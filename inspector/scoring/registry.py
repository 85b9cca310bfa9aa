"""The one table from a bundle's scorer (``type``, ``method``) to the runtime class (imported lazily).

``type`` is the family (the config's ``scorer.type``), ``method`` the algorithm within it
(``scorer.method``, saved in the bundle's scorer params). A bundle without a method gets its
family's first one (bundles written before methods existed were all PatchCore).
"""
from __future__ import annotations

import numpy as np

from engines.registry import import_target

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
    return import_target(target)


def scorer_from_bundle(scorer_type: str, params: dict, arrays: dict[str, np.ndarray]):
    return scorer_class(scorer_type, params.get("method")).from_bundle(params, arrays)


def search_params(scorer_type: str, method: str | None, engine_precision: str) -> dict:
    """Scorer params that pin how a searching scorer (the memory bank) searches: bf16 when the
    calibrating engine runs bf16, else exact fp32. Calibration writes them into the bundle, so the
    line always searches the way its thresholds were set (bundles without it search fp32)."""
    if not hasattr(scorer_class(scorer_type, method), "set_search_precision"):
        return {}
    return {"search": "bf16" if engine_precision == "bf16" else "fp32"}
