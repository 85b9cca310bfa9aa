"""The one list of methods, and everything built from it: the config union (settings), the
manifest's params union (bundle validation), the default method of each family, and loading a
bundle's fitted state. Calibration finds each method's fitter by the same name
(calibration/methods/<name>.py).

A config file's ``scorer.type`` is the family (memory_bank, hypersphere, reconstruction, discriminative,
flow, supervised) and
``scorer.method`` the method; a file without ``type`` means memory_bank, and a family without
``method`` means its first method here.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Union

import numpy as np
from pydantic import Discriminator, Tag
from pydantic_core import PydanticCustomError
from typing_extensions import Annotated

from inspector.methods import (anoddpm, autoencoder, deep_svdd, discriminator, fanogan, flow, global_context, ocsvm,
                               padim, patchcore, supervised)
from inspector.methods.base import Method, MethodParams, ScoreMap

# the one list; within a family, the first is the default
METHODS: tuple[Method, ...] = (patchcore, padim, global_context, deep_svdd, ocsvm, autoencoder, fanogan, anoddpm,
                               discriminator, flow, supervised)

BY_NAME: dict[str, Method] = {m.NAME: m for m in METHODS}
DEFAULT_FAMILY = "memory_bank"


def family(method: Method) -> str:
    return method.Config.model_fields["type"].default


FAMILIES: dict[str, tuple[str, ...]] = {}
for _m in METHODS:
    FAMILIES[family(_m)] = FAMILIES.get(family(_m), ()) + (_m.NAME,)


def _named(names) -> str:
    names = [f"'{n}'" for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def method_name(scorer_type: Any, method: Any) -> str:
    """The method a (type, method) pair names, checked; ValueError (one line) otherwise."""
    if scorer_type not in FAMILIES:
        raise ValueError(f"type {scorer_type!r} is not allowed; expected {_named(FAMILIES)}")
    if method is None:
        return FAMILIES[scorer_type][0]
    if method not in FAMILIES[scorer_type]:
        raise ValueError(f"method {method!r} is not allowed with type {scorer_type}; expected "
                         f"{_named(FAMILIES[scorer_type])}")
    return method


def check_scorer_section(data: Any) -> Any:
    """Before the config union: the section's (type, method) pair must be one this inspector
    has, so a wrong pair reads as such rather than as the chosen class's field errors."""
    if isinstance(data, dict):
        try:
            method_name(data.get("type", DEFAULT_FAMILY), data.get("method"))
        except ValueError as exc:
            raise PydanticCustomError("scorer_method", str(exc)) from None
    return data


def _config_tag(value: Any) -> Optional[str]:
    if isinstance(value, dict):
        scorer_type = value.get("type", DEFAULT_FAMILY)
        return value.get("method") or (FAMILIES.get(scorer_type) or (None,))[0]
    return getattr(value, "method", None)


def _params_tag(value: Any) -> Optional[str]:
    return value.get("method") if isinstance(value, dict) else getattr(value, "method", None)


# scorer: in the config file (settings.Settings.scorer)
ScorerConfig = Annotated[Union[tuple(Annotated[m.Config, Tag(m.NAME)] for m in METHODS)], Discriminator(_config_tag)]
# scorer.params in a bundle's manifest (inspector/manifest.py ScorerSection)
ScorerParams = Annotated[Union[tuple(Annotated[m.Params, Tag(m.NAME)] for m in METHODS)], Discriminator(_params_tag)]


def method_of(name: str) -> Method:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no method {name!r}; known: {', '.join(BY_NAME)}") from None


def config_for(config, name: str):
    """``config`` (any method's) turned into method ``name``'s, keeping what they share
    (calibrate --auto compares PatchCore and PaDiM so)."""
    return method_of(name).Config.model_validate({**config.model_dump(), "method": name})


class Scorer:
    """A method bound to its fitted state: what the pipeline calls per batch."""

    def __init__(self, method: Method, state: Any):
        self.method = method
        self.state = state

    @property
    def name(self) -> str:
        return self.method.NAME

    def score(self, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
        """features: {name: float32 [N, C, h, w]} -> ScoreMap at ``input_hw`` (H, W)."""
        return self.method.score(self.state, features, input_hw)


def load_state(params: MethodParams, arrays: Mapping[str, np.ndarray]):
    """The fitted state a bundle's params and arrays describe; StateInvalid (one line) if its
    arrays are missing or ill-shaped."""
    return method_of(params.method).State.from_bundle(params, arrays)


def scorer_from_bundle(params: MethodParams, arrays: Mapping[str, np.ndarray]) -> Scorer:
    return Scorer(method_of(params.method), load_state(params, arrays))


__all__ = ["BY_NAME", "FAMILIES", "METHODS", "Scorer", "ScorerConfig", "ScorerParams",
           "check_scorer_section", "config_for", "load_state", "method_name", "method_of", "scorer_from_bundle"]
