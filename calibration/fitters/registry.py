"""The one table from a scorer config's (``type``, ``method``) to its fitter. A test checks
every scorer in the config union has one (and a runtime class)."""
from __future__ import annotations

from engines.registry import import_target

FITTERS: dict[tuple[str, str], str] = {
    ("memory_bank", "patchcore"): "calibration.fitters.memory_bank:CoresetFitter",
    ("memory_bank", "padim"): "calibration.fitters.padim:PadimFitter",
    ("hypersphere", "deep_svdd"): "calibration.fitters.deep_svdd:DeepSvddFitter",
    ("hypersphere", "ocsvm"): "calibration.fitters.ocsvm:OcsvmFitter",
    ("reconstruction", "autoencoder"): "calibration.fitters.autoencoder:AutoencoderFitter",
}


def build_fitter(scorer_config, seed: int = 0):
    key = (scorer_config.type, scorer_config.method)
    try:
        target = FITTERS[key]
    except KeyError:
        raise KeyError(f"no fitter registered for scorer type {key[0]!r} method {key[1]!r}; "
                       f"known: {sorted(f'{t}/{m}' for t, m in FITTERS)}") from None
    return import_target(target)(scorer_config, seed=seed)
