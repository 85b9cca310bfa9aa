"""Reading a model bundle: one directory of safe formats.

    manifest.json   schema version, preprocessing, network, engine I/O, scorer, thresholds...
    arrays.npz      numeric state (memory bank, Gaussian stats...), loaded with allow_pickle=False
    backbone.onnx   the feature network (and any trained head) for the engines

Writing lives in calibration/bundle.py; the daemon only reads.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineSpec
from engines.hashing import file_sha256
from inspector.errors import BundleError
from inspector.preprocess import Preprocessor, PreprocessSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
# the golden reference view for preprocess.align (float32 grey, the work size [H, W]), in arrays.npz
ALIGN_REFERENCE = "align_reference"


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def id(self) -> str:
        return self.manifest["bundle_id"]

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec.from_json(self.manifest["preprocess"])

    def preprocessor(self, roi_by_source: dict | None = None) -> Preprocessor:
        """The frames -> network input stage this bundle was calibrated with (and its golden
        reference, when alignment is on)."""
        return Preprocessor(self.preprocess, roi_by_source, self.arrays.get(ALIGN_REFERENCE))

    @property
    def image_threshold(self) -> float:
        return float(self.manifest["thresholds"]["image"])

    @property
    def pixel_threshold(self) -> float | None:
        v = self.manifest["thresholds"].get("pixel")
        return None if v is None else float(v)

    @property
    def scorer_type(self) -> str:
        return self.manifest["scorer"]["type"]

    @property
    def scorer_params(self) -> dict:
        return self.manifest["scorer"].get("params", {})

    @property
    def calibrated_precision(self) -> str:
        return self.manifest["engine"].get("calibrated_precision", "fp32")

    def engine_spec(self, max_batch: int = 8) -> EngineSpec:
        e = self.manifest["engine"]
        return EngineSpec(
            onnx_path=str(self.path / e["onnx"]),
            input_name=e["input_name"],
            input_shape=tuple(int(v) for v in e["input_shape"]),
            output_names=tuple(e["output_names"]),
            max_batch=max_batch,
            network=self.manifest.get("network"),
        )


def load_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Load and check a bundle. Raises BundleError naming the file and what to do."""
    path = Path(path)
    hint = "run `inspector calibrate --golden DIR --out BUNDLE` to make one"
    if not path.is_dir():
        raise BundleError(f"bundle {path}: not found (or not a directory); {hint}")
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"bundle {path}: {MANIFEST} missing; {hint}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {path}: {MANIFEST} unreadable ({exc}); recalibrate") from None
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"bundle {path}: schema version {version}, this inspector reads {SCHEMA_VERSION}; "
                          f"recalibrate with this version")
    for key in ("bundle_id", "preprocess", "engine", "scorer", "thresholds"):
        if key not in manifest:
            raise BundleError(f"bundle {path}: {MANIFEST} lacks '{key}'; recalibrate")
    files = {"arrays": path / ARRAYS, "onnx": path / manifest["engine"]["onnx"]}
    for what, f in files.items():
        if not f.is_file():
            raise BundleError(f"bundle {path}: {f.name} missing; the bundle is incomplete, recalibrate")
    if verify_hashes:
        expected = manifest.get("hashes", {})
        for what, f in files.items():
            want = expected.get(what)
            if want and file_sha256(f) != want:
                raise BundleError(f"bundle {path}: {f.name} does not match its sha256 in {MANIFEST} "
                                  f"(corrupt or edited); recalibrate or restore the bundle")
    try:
        with np.load(files["arrays"], allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {path}: {ARRAYS} unreadable ({exc}); recalibrate") from None
    bundle = Bundle(path=path, manifest=manifest, arrays=arrays)
    pre = bundle.preprocess
    if pre.align is not None:
        ref = arrays.get(ALIGN_REFERENCE)
        work_w, work_h = pre.work_size
        if ref is None or ref.shape != (work_h, work_w):
            raise BundleError(f"bundle {path}: preprocess.align is on but {ARRAYS} has no {work_w}x{work_h} "
                              f"'{ALIGN_REFERENCE}'; the bundle is incomplete, recalibrate")
    return bundle
