"""Every method in the config union is a whole method module (Config, Params, State, score,
HEAD) with a fitter; the families and defaults config files rely on; errors read well."""
import inspect
import typing
from pathlib import Path

import numpy as np
import pytest

from calibration.methods import fitter
from inspector.errors import ConfigError
from inspector.methods.base import EngineHead, MethodConfig, MethodParams
from inspector.methods.registry import FAMILIES, METHODS, ScorerConfig, ScorerParams, method_of
from inspector.settings import settings_from_dict


def _union_members(union) -> list:
    return [typing.get_args(member)[0] for member in typing.get_args(typing.get_args(union)[0])]


def test_every_config_in_the_union_has_a_method_module_and_a_fitter():
    configs = _union_members(ScorerConfig)
    assert configs == [m.Config for m in METHODS]
    assert _union_members(ScorerParams) == [m.Params for m in METHODS]
    for config in configs:
        name = typing.get_args(config.model_fields["method"].annotation)[0]
        method = method_of(name)
        assert method.NAME == name == method.__name__.rsplit(".", 1)[1]
        assert issubclass(method.Config, MethodConfig) and issubclass(method.Params, MethodParams)
        assert method.Params.model_fields["method"].default == name
        assert callable(method.State.from_bundle) and callable(method.State.arrays)
        assert list(inspect.signature(method.score).parameters) == ["state", "features", "input_hw"]
        assert method.HEAD is None or (isinstance(method.HEAD, EngineHead)
                                       and callable(method.State.network_head))
        fit = fitter(name)
        extra = ["defects"] if getattr(method, "USES_DEFECTS", False) else []
        params = inspect.signature(fit).parameters
        assert [p for p in params if p != "groups"] == ["features", "config", "seed", "progress", *extra]
        # optional, last: each row's original golden image, for a fit that holds images out itself
        assert "groups" not in params or (list(params)[-1] == "groups" and params["groups"].default is None)


def test_families_and_their_defaults():
    assert FAMILIES == {"memory_bank": ("patchcore", "padim", "global_context"), "hypersphere": ("deep_svdd", "ocsvm"),
                        "reconstruction": ("autoencoder", "fanogan", "anoddpm"), "discriminative": ("discriminator",),
                        "flow": ("flow",), "supervised": ("supervised",)}
    s = settings_from_dict({}, base_dir=Path("/"))
    assert (s.scorer.type, s.scorer.method) == ("memory_bank", "global_context")
    assert s.scorer.global_context.map_weight == 0.0  # the default keeps PatchCore's map
    # a memory_bank section that names no method meant PatchCore when it was written, and still does
    s = settings_from_dict({"scorer": {"type": "memory_bank", "coreset": {"ratio": 0.1}}}, base_dir=Path("/"))
    assert s.scorer.method == "patchcore"
    s = settings_from_dict({"scorer": {"smoothing_sigma": 2.0}}, base_dir=Path("/"))
    assert s.scorer.method == "patchcore"
    s = settings_from_dict({"scorer": {"type": "hypersphere"}}, base_dir=Path("/"))
    assert s.scorer.method == "deep_svdd"
    # a file that switched method but kept the other method's section still validates
    s = settings_from_dict({"scorer": {"type": "memory_bank", "method": "padim", "coreset": {"ratio": 0.1},
                                       "padim": {"n_channels": 50}}}, base_dir=Path("/"))
    assert s.scorer.method == "padim" and s.scorer.padim.n_channels == 50


def test_bundles_without_a_method_are_their_familys_first():
    from inspector.manifest import ScorerSection

    section = ScorerSection.model_validate({"type": "memory_bank", "params": {}})
    assert section.params.method == "patchcore"
    state = method_of("patchcore").State.from_bundle(section.params, {"memory_bank": np.zeros((4, 8), np.float32)})
    assert state.searcher.name == "fp32"


def test_unknown_methods_errors_name_what_is_known():
    with pytest.raises(KeyError, match="patchcore, padim"):
        method_of("nope")
    with pytest.raises(ConfigError, match="scorer: method 'ocsvm' is not allowed with type memory_bank; "
                                          "expected 'patchcore', 'padim' or 'global_context'"):
        settings_from_dict({"scorer": {"method": "ocsvm"}}, base_dir=Path("/"))
    with pytest.raises(ConfigError, match="type 'gauss' is not allowed"):
        settings_from_dict({"scorer": {"type": "gauss"}}, base_dir=Path("/"))
    with pytest.raises(ConfigError, match="scorer.deep_svdd.objective"):
        settings_from_dict({"scorer": {"type": "hypersphere", "deep_svdd": {"objective": "hard"}}}, base_dir=Path("/"))
