"""Writing a model bundle (the daemon reads it with inspector.bundle.load_bundle).

Written into a temporary sibling directory and renamed into place, so a half-written bundle is
never mistaken for a complete one; the bundle it replaces is kept as BUNDLE.previous
(calibration/bundle_dir.py, which also says which --out folders calibration may replace).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from calibration.bundle_dir import new_temporary_sibling, swap_in
from inspector import __version__
from engines.hashing import file_sha256
from inspector.bundle import ARRAYS, MANIFEST
from inspector.errors import InspectorError
from inspector.manifest import SCHEMA_VERSION, BundleManifest, validation_line


def write_bundle(out: str | Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray], onnx_file: Path,
                 extra_files: dict[str, Path] | None = None) -> BundleManifest:
    """Write manifest.json + arrays.npz + the ONNX (+ extra files) into ``out``; returns the
    manifest as written.

    ``manifest`` (the sections) gets schema_version, created_at, inspector_version, hashes,
    bundle_id and its own checksum added, and is validated by the same model the daemon reads
    it with: a bundle the daemon would refuse is never written.
    """
    out = Path(out)
    tmp = new_temporary_sibling(out)
    try:
        np.savez(tmp / ARRAYS, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        onnx_name = manifest["engine"]["onnx"]
        shutil.copyfile(onnx_file, tmp / onnx_name)
        for name, src in (extra_files or {}).items():
            shutil.copyfile(src, tmp / name)
        hashes = {"arrays": file_sha256(tmp / ARRAYS), "onnx": file_sha256(tmp / onnx_name)}
        m = dict(manifest)
        m["schema_version"] = SCHEMA_VERSION
        m["inspector_version"] = __version__
        m["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        m["hashes"] = hashes
        # identity = what changes scores: network, arrays, thresholds, preprocessing
        ident = json.dumps([hashes, m["thresholds"], m["preprocess"], m["scorer"]], sort_keys=True)
        m["bundle_id"] = hashlib.sha256(ident.encode()).hexdigest()[:12]
        try:
            sealed = BundleManifest.sealed(m)
        except ValidationError as exc:  # e.g. a NaN threshold from NaN scores: never write it
            raise InspectorError(f"calibration made a manifest the daemon would refuse: {validation_line(exc)}; "
                                 f"nothing was written to {out}") from None
        (tmp / MANIFEST).write_text(sealed.to_json_text(), encoding="utf-8")
        swap_in(tmp, out)  # the bundle it replaces is kept as BUNDLE.previous
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return sealed
