"""The engine registry covers every engine config type, and importing it stays light."""
from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from engines import registry
from engines.base import EngineUnavailable

ROOT = Path(__file__).resolve().parents[2]


def engine_config_classes():
    from inspector import settings

    union = typing.get_args(settings.EngineConfig)[0]  # Annotated[Union[...], discriminator]
    return [typing.get_args(member)[0] for member in typing.get_args(union)]


def test_every_engine_config_type_has_a_registry_entry():
    types = {cls.model_fields["type"].default for cls in engine_config_classes()}
    assert {"onnxruntime", "torch", "tensorrt", "openvino"} <= types
    assert types == set(registry.ENGINES), (types, set(registry.ENGINES))


def test_every_engine_config_is_strict_and_frozen():
    for cls in engine_config_classes():
        assert cls.model_config.get("extra") == "forbid" and cls.model_config.get("frozen") is True, cls


def test_every_registry_target_is_module_colon_class():
    for kind, target in registry.ENGINES.items():
        module, _, cls = target.partition(":")
        assert module.startswith("engines.") and cls, (kind, target)
        assert (ROOT / (module.replace(".", "/") + ".py")).exists() or kind in ("torch", "onnxruntime"), target


def test_unknown_type_names_the_known_ones():
    with pytest.raises(KeyError, match="known: \\['onnxruntime', 'openvino', 'tensorrt', 'torch'\\]"):
        registry.engine_class("tflite")


def test_build_engine_dispatches_on_type(monkeypatch, tmp_path):
    from engines.tensorrt_engine import TensorRTEngineConfig
    from tests.unit._engine_fixtures import tiny_spec

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineUnavailable, match="inspector\\[tensorrt\\]"):
        registry.build_engine(TensorRTEngineConfig(), tiny_spec(tmp_path / "x.onnx"))


def test_importing_registry_and_configs_imports_no_backend():
    code = (
        "import sys, engines.registry, engines.tensorrt_engine, engines.openvino_engine, engines.ort_providers, "
        "engines.plan_cache, engines.tensorrt_build, inspector.settings\n"
        "heavy = [m for m in ('tensorrt', 'pycuda', 'openvino', 'onnxruntime', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
