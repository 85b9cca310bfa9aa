"""Build the TensorRT plan for a model bundle ahead of time, on the line-side GPU machine.

The daemon builds a missing or stale plan on its first start anyway (minutes for a large
backbone); run this after installing a bundle or upgrading TensorRT/the GPU driver so the
first start is fast. The plan is a cache: it is written to ``engine-cache/`` next to the
bundle's ONNX, keyed by ONNX hash, TensorRT version, GPU model, compute capability, precision
and batch profile, and never shipped between machines. Settings come from the config's
``engine:`` section when it is of type tensorrt (so the daemon finds exactly this plan), then
from the options here.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Optional

from inspector.errors import BundleError, InspectorError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="model bundle directory (default: the config's bundle)")
    parser.add_argument("--config", type=Path, help="YAML config; its engine section (type tensorrt) gives the defaults")
    parser.add_argument("--max-batch", type=int, metavar="N", help="largest batch the plan accepts (profile 1..N)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), help="fp16 falls back to fp32 on GPUs without fast FP16")
    parser.add_argument("--force", action="store_true", help="rebuild even when a matching plan is cached")


def engine_spec_from_bundle(bundle: Path, max_batch: int):
    """EngineSpec from ``bundle/manifest.json``'s ``engine`` section (keys onnx, input_name,
    input_shape [C, H, W] or [N, C, H, W], output_names). Raises BundleError."""
    from engines.base import EngineSpec

    manifest_path = bundle / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        eng = manifest["engine"]
        onnx = bundle / eng["onnx"]
        shape = [int(d) for d in eng["input_shape"]]
        spec = EngineSpec(onnx_path=str(onnx), input_name=str(eng["input_name"]), input_shape=tuple(shape[-3:]),
                          output_names=tuple(eng["output_names"]), max_batch=max_batch)
    except FileNotFoundError:
        raise BundleError(f"bundle {bundle}: no manifest.json (is this a model bundle directory?)") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"bundle {manifest_path}: unreadable engine section ({type(exc).__name__}: {exc}); "
                          "expected engine.onnx, engine.input_name, engine.input_shape, engine.output_names") from None
    if len(shape) not in (3, 4):
        raise BundleError(f"bundle {manifest_path}: engine.input_shape {shape} is not [C, H, W]")
    if not onnx.is_file():
        raise BundleError(f"bundle {bundle}: engine.onnx {eng['onnx']!r} does not exist")
    return spec


def tensorrt_config(config_path: Optional[Path], max_batch: Optional[int], precision: Optional[str]):
    """(TensorRTEngineConfig, bundle from the config or None)."""
    from pydantic import ValidationError

    from engines.tensorrt_engine import TensorRTEngineConfig

    base, bundle = TensorRTEngineConfig(), None
    if config_path is not None:
        from inspector.settings import load_settings

        settings = load_settings(config_path)
        bundle = settings.bundle
        if settings.engine.type == "tensorrt":
            base = settings.engine
        else:
            log.warning("config %s has engine.type %s: building with TensorRT defaults; the daemon will not use "
                        "this plan until engine.type is tensorrt", config_path, settings.engine.type)
    overrides = {k: v for k, v in (("max_batch", max_batch), ("precision", precision)) if v is not None}
    try:
        return TensorRTEngineConfig(**{**base.model_dump(), **overrides}), bundle
    except ValidationError as exc:  # e.g. --max-batch 0
        err = exc.errors()[0]
        raise InspectorError(f"build-engine: --{'-'.join(map(str, err['loc'])).replace('_', '-')} "
                             f"{err.get('input')!r}: {err['msg']}") from None


def run(args: argparse.Namespace) -> int:
    from engines import plan_cache
    from engines.base import EngineError, EngineUnavailable
    from engines.tensorrt_engine import TensorRTEngine

    config, config_bundle = tensorrt_config(args.config, args.max_batch, args.precision)
    bundle = args.bundle or config_bundle
    if bundle is None:
        raise InspectorError("build-engine: pass --bundle DIR (or --config with a bundle: key)")
    spec = engine_spec_from_bundle(Path(bundle), config.max_batch)
    if args.force:
        plan = plan_cache.plan_path_for(Path(spec.onnx_path))
        for p in (plan, Path(str(plan) + ".json")):
            p.unlink(missing_ok=True)
    try:
        engine = TensorRTEngine(spec, config)
    except (EngineUnavailable, EngineError) as exc:
        raise InspectorError(str(exc)) from None
    try:
        engine.warmup()
    finally:
        engine.close()
    print(f"{engine.plan_status} {engine.plan_path} ({engine.precision}, batch 1..{config.max_batch})")
    return 0
