"""Every scorer in the config union has a runtime class and a fitter; errors read well."""
import typing
from pathlib import Path

import pytest

from calibration.fitters.registry import FITTERS, build_fitter
from inspector.errors import ConfigError
from inspector.scoring.registry import SCORERS, scorer_class, scorer_from_bundle
from inspector.settings import ScorerConfig, settings_from_dict


def _config_scorers():
    """(type, method, config class) for every member of the ScorerConfig union."""
    union = typing.get_args(ScorerConfig)[0]
    out = []
    for member in typing.get_args(union):
        cls = typing.get_args(member)[0]
        scorer_type = typing.get_args(cls.model_fields["type"].annotation)[0]
        for method in typing.get_args(cls.model_fields["method"].annotation):
            out.append((scorer_type, method, cls))
    return out


def test_every_config_scorer_has_a_runtime_class_and_a_fitter():
    pairs = _config_scorers()
    assert {(t, m) for t, m, _ in pairs} == set(SCORERS) == set(FITTERS)
    for scorer_type, method, cls in pairs:
        assert hasattr(scorer_class(scorer_type, method), "from_bundle")
        config = cls(type=scorer_type, method=method)
        fitter = build_fitter(config, seed=0)
        assert callable(fitter.fit) and fitter.scorer_type == scorer_type


def test_families():
    assert scorer_class("memory_bank", "padim").family == "memory_bank"
    assert scorer_class("hypersphere", "ocsvm").family == "hypersphere"
    assert scorer_class("reconstruction", "autoencoder").family == "reconstruction"


def test_bundles_without_a_method_are_patchcore():
    import numpy as np

    scorer = scorer_from_bundle("memory_bank", {}, {"memory_bank": np.zeros((4, 8), np.float32)})
    assert type(scorer).__name__ == "MemoryBankScorer"


def test_unknown_scorer_errors_name_what_is_known():
    with pytest.raises(KeyError, match="memory_bank/padim"):
        scorer_class("memory_bank", "nope")
    with pytest.raises(ConfigError, match="scorer.method: 'ocsvm' is not allowed; expected 'patchcore' or 'padim'"):
        settings_from_dict({"scorer": {"method": "ocsvm"}}, base_dir=Path("/"))
    with pytest.raises(ConfigError, match="type 'gauss' is not allowed"):
        settings_from_dict({"scorer": {"type": "gauss"}}, base_dir=Path("/"))
    with pytest.raises(ConfigError, match="scorer.deep_svdd.objective"):
        settings_from_dict({"scorer": {"type": "hypersphere", "deep_svdd": {"objective": "hard"}}}, base_dir=Path("/"))
