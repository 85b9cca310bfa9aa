"""OpenVINO engine (Intel CPUs): reads the bundle's ONNX, dynamic batch 1..max_batch.

The default CPU engine. Precision is always set explicitly, never left to OpenVINO's own default:
``auto`` (the default) picks bf16 where the CPU reports BF16 (AMX / AVX512_BF16: ~40% less time
per frame, same AUROC on MVTec bottle and magnetic_tile) and fp32 elsewhere; ``fp32`` / ``bf16``
force one. The compiled model's actual precision is read back, logged and recorded in the bundle at
calibration, and the daemon refuses a bundle calibrated at another precision, so a bundle made on a
bf16 machine is refused (with a line saying what to do) on a line PC without bf16.
Importing this module does not import openvino; the constructor does.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from engines.base import EngineError, EngineSpec, EngineUnavailable, normalise_precision, run_in_chunks, warm_up

log = logging.getLogger(__name__)

# the project's precision names (engines.base.normalise_precision) -> OpenVINO's INFERENCE_PRECISION_HINT;
# the compiled model's hint (ov.Type.get_type_name(): f32 / bf16 / f16) is reported back through
# normalise_precision, in the project's names (fp32 / bf16 / fp16), the same as the other engines
_OV_HINT = {"fp32": "f32", "bf16": "bf16"}

INSTALL_HINT = ("engine.type openvino needs OpenVINO, an inspector dependency that is missing here: "
                "reinstall inspector (pip install -e .) or pip install openvino")


class OpenVinoEngineConfig(BaseModel):
    """``engine:`` section for OpenVINO on the CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["openvino"] = "openvino"
    # fp32 (or OpenVINO's own spelling f32): exact, matches onnxruntime within 1e-4; the engine
    # reports "fp32" either way, so a bundle calibrated on any fp32 engine runs here. bf16: faster
    # on AMX/AVX512_BF16 CPUs (efficientnet_lite0 256x256: ~45% less CPU than f32), image scores
    # differ from f32 by up to ~3.5% (mean 0.4%; MVTec bottle and the test bundle); the engine
    # reports "bf16" and the daemon refuses a bundle calibrated at another precision
    # (recalibrate with this setting).
    # auto: bf16 where the CPU reports BF16, else fp32 (resolved when the engine starts)
    precision: Literal["auto", "fp32", "f32", "bf16"] = "auto"
    threads: int = Field(0, ge=0, le=256)  # 0: OpenVINO picks
    max_batch: int = Field(4, ge=1, le=64)


def import_openvino():
    """``import openvino``, with its telemetry off. On import OpenVINO's model-conversion tools
    start ``openvino_telemetry``, which takes a missing consent file for consent: it writes a
    client id under ``~/intel`` and posts an event to Google Analytics from a forked process. The
    tools fall back to a built-in no-op stub when that package cannot be imported, so it is
    marked unimportable (a ``None`` entry in ``sys.modules``) before openvino is first imported.
    Every import of openvino in this project goes through here."""
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


# Set to anything but "" or "0": this CPU is taken as one without bf16 (no AMX / AVX512_BF16), so
# ``auto`` resolves to fp32 and a bf16 request runs fp32, as on such a CPU. CI runs the suite a
# second time with it on bf16 machines, so the fp32 path is tested wherever CI runs.
NO_BF16_ENV = "INSPECTOR_CPU_NO_BF16"


def bf16_switched_off() -> bool:
    return os.environ.get(NO_BF16_ENV, "") not in ("", "0")


@functools.lru_cache(maxsize=1)
def _openvino_capabilities() -> tuple[str, ...]:
    ov = import_openvino()

    return tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def cpu_capabilities() -> tuple[str, ...]:
    """OpenVINO's OPTIMIZATION_CAPABILITIES of this CPU (asked once per process), without BF16
    when $INSPECTOR_CPU_NO_BF16 is set."""
    caps = _openvino_capabilities()
    return tuple(c for c in caps if c != "BF16") if bf16_switched_off() else caps


def default_precision() -> str:
    """What ``precision: auto`` resolves to on this machine's CPU."""
    return resolve_precision("auto", cpu_capabilities())


def resolve_precision(precision: str, cpu_capabilities) -> str:
    """The precision to compile with: ``auto`` is bf16 where the CPU reports BF16, else fp32."""
    if precision == "auto":
        return "bf16" if "BF16" in cpu_capabilities else "fp32"
    return precision


class OpenVinoEngine:
    """Engine protocol on OpenVINO.

    run(batch): float32 [N, C, H, W] (C, H, W = spec.input_shape), any N >= 1 (split into
    chunks of max_batch); returns {output name: float32 [N, C_out, h, w]}. One infer request is
    created once and reused; not thread-safe (one inference worker owns it).
    """

    kind = "openvino"

    def __init__(self, spec: EngineSpec, config: OpenVinoEngineConfig):
        try:
            ov = import_openvino()
        except ImportError as exc:
            raise EngineUnavailable(f"{INSTALL_HINT} [{exc}]") from None
        self.config = config
        self.spec = dataclasses.replace(spec, max_batch=config.max_batch)
        core = ov.Core()
        caps = cpu_capabilities()
        requested = resolve_precision(config.precision, caps)
        hint = _OV_HINT[normalise_precision(requested)]
        if requested == "bf16" and "BF16" not in caps:
            if bf16_switched_off():  # what OpenVINO does on a CPU without bf16
                log.warning("OpenVINO: precision bf16 requested but %s is set (a CPU without bf16): running fp32",
                            NO_BF16_ENV)
                hint = _OV_HINT["fp32"]
            else:
                log.warning("OpenVINO: precision bf16 requested but this CPU reports no BF16 support (%s); "
                            "OpenVINO will emulate or fall back", caps)
        model = core.read_model(spec.onnx_path)
        names = [i.get_any_name() for i in model.inputs]
        if names != [spec.input_name]:
            raise EngineError(f"{spec.onnx_path} inputs {names} do not match the spec input {spec.input_name!r}")
        c, h, w = spec.input_shape
        # A second model fixed at batch 1 (the usual case on a line, one frame at a time): the CPU
        # plugin runs a static shape ~16% faster than the dynamic 1..max_batch one (efficientnet_lite0
        # 256x256, 1 thread, CPU time: 7.8 vs 9.4 ms f32, 4.8 vs 5.6 ms bf16).
        single = model.clone() if config.max_batch > 1 else None
        model.reshape({spec.input_name: ov.PartialShape([ov.Dimension(1, config.max_batch), c, h, w])})
        # No CPU pinning: pinned inference threads fight the daemon's scoring, decoding and writing
        # threads for the same cores (as onnxruntime's did; see docs/BENCHMARKS.md)
        props = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
                 "ENABLE_CPU_PINNING": False}
        if config.threads:
            props["INFERENCE_NUM_THREADS"] = config.threads
        self._compiled = core.compile_model(model, "CPU", props)
        self._compiled_1 = None
        if single is not None:
            single.reshape({spec.input_name: ov.PartialShape([1, c, h, w])})
            self._compiled_1 = core.compile_model(single, "CPU", props)
        outputs = {n for o in self._compiled.outputs for n in o.get_names()}
        missing = [n for n in spec.output_names if n not in outputs]
        if missing:
            raise EngineError(f"{spec.onnx_path} has no output(s) {missing}; it has {sorted(outputs)}")
        actual = self._compiled.get_property("INFERENCE_PRECISION_HINT")
        name = actual.get_type_name() if hasattr(actual, "get_type_name") else str(actual)
        self.precision = normalise_precision(name)
        if self.precision != normalise_precision(requested):
            log.warning("OpenVINO: requested %s but the compiled model runs %s", config.precision, actual)
        log.info("OpenVINO %s on CPU: precision %s (requested %s), threads %s, PERFORMANCE_HINT LATENCY, batch 1..%d",
                 ov.__version__, self.precision, config.precision,
                 self._compiled.get_property("INFERENCE_NUM_THREADS"), config.max_batch)
        self._request = self._compiled.create_infer_request()
        self._request_1 = self._compiled_1.create_infer_request() if self._compiled_1 is not None else self._request

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if self._request is None:
            raise EngineError("OpenVINO engine is closed")
        return run_in_chunks(batch, self.spec, self._run_chunk)

    def _run_chunk(self, chunk: np.ndarray) -> dict[str, np.ndarray]:
        request = self._request_1 if len(chunk) == 1 else self._request
        request.infer({self.spec.input_name: chunk})
        # copies: the request's output tensors are reused by the next infer
        return {n: np.array(request.get_tensor(n).data, dtype=np.float32, copy=True) for n in self.spec.output_names}

    def warmup(self) -> None:
        warm_up(self, "OpenVINO")

    def close(self) -> None:
        self._request = self._request_1 = None
        self._compiled = self._compiled_1 = None
