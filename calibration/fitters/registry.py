"""The one table from scorer config ``type`` to its fitter. A test checks every scorer has one."""
from __future__ import annotations

import importlib

FITTERS: dict[str, str] = {
    "memory_bank": "calibration.fitters.memory_bank:CoresetFitter",
}


def build_fitter(scorer_config, seed: int = 0):
    target = FITTERS[scorer_config.type]
    module_name, _, cls_name = target.partition(":")
    return getattr(importlib.import_module(module_name), cls_name)(scorer_config, seed=seed)
