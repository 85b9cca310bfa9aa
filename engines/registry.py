"""The one table from engine config ``type`` to the class that runs it.

Classes are named by "module:Class" strings and imported only when built, so importing the
registry (or validating a config) never imports torch, onnxruntime, OpenVINO or TensorRT. Every
engine class takes ``(spec: EngineSpec, config)`` and raises EngineUnavailable when its backend
is missing. tests/unit/test_engine_registry.py checks that each config type in
inspector.settings.EngineConfig has a row here.
"""
from __future__ import annotations

import importlib
import logging

from engines.base import Engine, EngineSpec

log = logging.getLogger(__name__)

ENGINES: dict[str, str] = {
    "torch": "engines.torch_engine:TorchEngine",
    "onnxruntime": "engines.onnxruntime_engine:OnnxRuntimeEngine",
    "openvino": "engines.openvino_engine:OpenVinoEngine",
    "tensorrt": "engines.tensorrt_engine:TensorRTEngine",
}


def import_target(target: str):
    """``"package.module:Name"`` -> that object, importing the module only now (the registries'
    tables name classes whose modules pull in heavy or optional libraries)."""
    module_name, _, name = target.partition(":")
    return getattr(importlib.import_module(module_name), name)


def engine_class(engine_type: str) -> type:
    """Import and return the engine class for a config ``type``. KeyError names the known types."""
    try:
        target = ENGINES[engine_type]
    except KeyError:
        raise KeyError(f"no engine registered for type {engine_type!r}; known: {sorted(ENGINES)}") from None
    return import_target(target)


def build_engine(config, spec: EngineSpec) -> Engine:
    """Construct the engine ``config.type`` names. ``config`` is one of the engine config
    models (``settings.engine``); ``spec`` describes the bundle's network (ONNX path, input
    name and (C, H, W), output names). May raise EngineUnavailable / EngineError."""
    cls = engine_class(config.type)
    log.info("engine: %s (%s)", config.type, ENGINES[config.type])
    return cls(spec, config)
