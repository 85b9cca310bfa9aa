"""Reading a model bundle: one directory of safe formats.

    manifest.json   the typed manifest (inspector/manifest.py): preprocessing, network, engine I/O,
                    scorer, thresholds, hashes of the other files, and a checksum of itself
    arrays.npz      numeric state (memory bank, Gaussian stats...), loaded with allow_pickle=False;
                    the method's typed State is built from it and the manifest's scorer params
                    at load, so a missing or ill-shaped array refuses the bundle
    backbone.onnx   the feature network (and any trained head) for the engines

Writing lives in calibration/bundle.py; the daemon only reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.base import EngineSpec
from engines.hashing import file_sha256
from inspector.errors import BundleError
from inspector.manifest import SCHEMA_VERSION, BundleManifest, ManifestInvalid
from inspector.methods.base import Method, StateInvalid
from inspector.methods.registry import Scorer, load_state, method_of
from inspector.preprocess import Preprocessor, PreprocessSpec

__all__ = ["ALIGN_REFERENCE", "ARRAYS", "MANIFEST", "SCHEMA_VERSION", "Bundle", "load_bundle"]

MANIFEST = "manifest.json"
ARRAYS = "arrays.npz"
# the golden reference view for preprocess.align (float32 grey, the work size [H, W]), in arrays.npz
ALIGN_REFERENCE = "align_reference"


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: BundleManifest
    arrays: dict[str, np.ndarray]
    state: Any  # the method's State (inspector/methods/<method>.py)

    @property
    def id(self) -> str:
        return self.manifest.bundle_id

    @property
    def preprocess(self) -> PreprocessSpec:
        return self.manifest.preprocess.spec()

    def preprocessor(self, roi_by_source: dict | None = None) -> Preprocessor:
        """The frames -> network input stage this bundle was calibrated with (and its golden
        reference, when alignment is on)."""
        return Preprocessor(self.preprocess, roi_by_source, self.arrays.get(ALIGN_REFERENCE))

    @property
    def image_threshold(self) -> float:
        return self.manifest.thresholds.image

    @property
    def pixel_threshold(self) -> float | None:
        return self.manifest.thresholds.pixel

    @property
    def scorer_type(self) -> str:
        return self.manifest.scorer.type

    @property
    def scorer_params(self) -> dict:
        """The method's params as JSON data."""
        return self.manifest.scorer.params.model_dump(mode="json")

    @property
    def method(self) -> Method:
        return method_of(self.manifest.scorer.params.method)

    def scorer(self) -> Scorer:
        """The method bound to this bundle's fitted state (what the pipeline scores with)."""
        return Scorer(self.method, self.state)

    @property
    def calibrated_precision(self) -> str:
        return self.manifest.engine.calibrated_precision

    def engine_spec(self, max_batch: int = 8) -> EngineSpec:
        e = self.manifest.engine
        return EngineSpec(
            onnx_path=str(self.path / e.onnx),
            input_name=e.input_name,
            input_shape=tuple(e.input_shape),
            output_names=tuple(e.output_names),
            max_batch=max_batch,
            network=self.manifest.network.as_dict(),
        )


def read_manifest(path: str | Path) -> BundleManifest:
    """The bundle's manifest, checksum-checked and validated. Raises BundleError (one line)."""
    path = Path(path)
    hint = "run `inspector calibrate --golden DIR --out BUNDLE` to make one"
    if not path.is_dir():
        raise BundleError(f"bundle {path}: not found (or not a directory); {hint}")
    try:
        text = (path / MANIFEST).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BundleError(f"bundle {path}: {MANIFEST} missing; {hint}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {path}: {MANIFEST} unreadable ({exc}); recalibrate") from None
    try:
        return BundleManifest.from_json_text(text)
    except ManifestInvalid as exc:
        raise BundleError(f"bundle {path}: {MANIFEST} {exc}; recalibrate (inspector calibrate) "
                          f"or restore the bundle") from None


def load_bundle(path: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Load and check a bundle. Raises BundleError naming the file and what to do.
    verify_hashes=False skips comparing the files with their hashes (tests that edit a file on
    purpose); the manifest itself is always checked."""
    path = Path(path)
    manifest = read_manifest(path)
    files = {"arrays": path / ARRAYS, "onnx": path / manifest.engine.onnx}
    for f in files.values():
        if not f.is_file():
            raise BundleError(f"bundle {path}: {f.name} missing; the bundle is incomplete, recalibrate")
    if verify_hashes:
        for what, f in files.items():
            if file_sha256(f) != getattr(manifest.hashes, what):
                raise BundleError(f"bundle {path}: {f.name} does not match its sha256 in {MANIFEST} "
                                  f"(corrupt or edited); recalibrate or restore the bundle")
    try:
        with np.load(files["arrays"], allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"bundle {path}: {ARRAYS} unreadable ({exc}); recalibrate") from None
    try:
        state = load_state(manifest.scorer.params, arrays)
    except StateInvalid as exc:
        raise BundleError(f"bundle {path}: {ARRAYS} {exc}; the bundle is incomplete, recalibrate") from None
    bundle = Bundle(path=path, manifest=manifest, arrays=arrays, state=state)
    pre = bundle.preprocess
    if pre.align is not None:
        ref = arrays.get(ALIGN_REFERENCE)
        work_w, work_h = pre.work_size
        if ref is None or ref.shape != (work_h, work_w):
            raise BundleError(f"bundle {path}: preprocess.align is on but {ARRAYS} has no {work_w}x{work_h} "
                              f"'{ALIGN_REFERENCE}'; the bundle is incomplete, recalibrate")
    return bundle
