"""TensorRT plan cache: serialized engines are caches built on the target GPU, never shipped.

Layout, next to the ONNX file it was built from::

    <onnx dir>/engine-cache/<onnx stem>.plan        the serialized engine (bytes from TensorRT)
    <onnx dir>/engine-cache/<onnx stem>.plan.json   sidecar: the PlanKey plus plan sha256 and metadata
    <onnx dir>/engine-cache/timing.cache            TensorRT timing cache reused across builds

A plan is valid only for the exact key it was built with (ONNX bytes, TensorRT version, GPU
model, compute capability, precision, batch profile). Anything else is stale: ``lookup`` says
which key part differs so the caller can log why it rebuilds. Plain bytes + JSON, no pickle.
Imports no TensorRT: the key is computed from values the caller probed.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Optional

from engines.atomicfile import atomic_write_bytes

log = logging.getLogger(__name__)

CACHE_DIR_NAME = "engine-cache"
SIDECAR_SCHEMA = 1


@dataclass(frozen=True)
class PlanKey:
    """Everything a TensorRT plan depends on. Two equal keys can share one plan.

    precision is the *requested* precision ("fp16" or "fp32"); on a GPU without fast FP16 an
    "fp16" request builds an FP32 plan, recorded as ``effective_precision`` in the sidecar.
    profile is "min/opt/max" of the input shape, e.g. "1x3x256x256/4x3x256x256/4x3x256x256".
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.6"
    precision: str
    profile: str

    def differences(self, other: "PlanKey") -> list[str]:
        """Human-readable list of the key parts that differ, 'part: cached -> wanted'."""
        out = []
        for f in fields(self):
            a, b = getattr(other, f.name), getattr(self, f.name)
            if a != b:
                out.append(f"{f.name} {_short(a)} -> {_short(b)}")
        return out


def _short(v: str) -> str:
    return v[:12] if len(v) == 64 and all(c in "0123456789abcdef" for c in v) else v


def profile_string(input_shape: tuple[int, int, int], max_batch: int) -> str:
    """The optimisation profile the builder uses: min batch 1, opt = max = max_batch."""
    chw = "x".join(str(d) for d in input_shape)
    return f"1x{chw}/{max_batch}x{chw}/{max_batch}x{chw}"


def cache_dir_for(onnx_path: Path) -> Path:
    return Path(onnx_path).resolve().parent / CACHE_DIR_NAME


def plan_path_for(onnx_path: Path) -> Path:
    return cache_dir_for(onnx_path) / f"{Path(onnx_path).stem}.plan"


def default_timing_cache_path(onnx_path: Path) -> Path:
    return cache_dir_for(onnx_path) / "timing.cache"


@dataclass(frozen=True)
class CachedPlan:
    plan: bytes
    effective_precision: str  # "fp16" or "fp32": what the plan was actually built with


def lookup(plan_path: Path, key: PlanKey) -> tuple[Optional[CachedPlan], str]:
    """Return (cached plan or None, reason). The reason says why a plan is missing or stale,
    naming every key part that differs; on a hit it is "hit"."""
    sidecar = Path(str(plan_path) + ".json")
    if not plan_path.exists() or not sidecar.exists():
        return None, f"no cached plan at {plan_path}"
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        cached_key = PlanKey(**meta["key"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, f"unreadable sidecar {sidecar} ({exc})"
    diff = key.differences(cached_key)
    if diff:
        return None, "cached plan is stale: " + "; ".join(diff)
    data = plan_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("plan_sha256"):
        return None, f"cached plan {plan_path} does not match its recorded sha256 (truncated or overwritten)"
    return CachedPlan(plan=data, effective_precision=str(meta.get("effective_precision", key.precision))), "hit"


def store(plan_path: Path, key: PlanKey, plan: bytes, effective_precision: str, build_seconds: float) -> None:
    """Write plan then sidecar, each atomically (tmp file + os.replace). A crash between the
    two leaves a plan without a sidecar, which ``lookup`` treats as missing."""
    atomic_write_bytes(plan_path, plan)
    meta = {
        "schema": SIDECAR_SCHEMA,
        "key": asdict(key),
        "plan_sha256": hashlib.sha256(plan).hexdigest(),
        "plan_bytes": len(plan),
        "effective_precision": effective_precision,
        "build_seconds": round(build_seconds, 3),
    }
    atomic_write_bytes(Path(str(plan_path) + ".json"), (json.dumps(meta, indent=2) + "\n").encode("utf-8"))

