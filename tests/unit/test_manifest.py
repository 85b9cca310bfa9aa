"""A bundle's manifest.json is not trusted: every field of a real manifest, mutated one at a
time (NaN, null, a string, negative, zero, deleted), refuses the bundle with one line; so does an
edit that leaves the manifest's own checksum stale, and a bundle made before the checksum."""
from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
from inspector.bundle import load_bundle
from inspector.errors import BundleError

DELETE = object()
# what write_bundle adds to the sections calibration hands it
WRITER_ADDS = ("schema_version", "inspector_version", "created_at", "hashes", "bundle_id", "manifest_sha256")
NAN, INF = float("nan"), float("inf")


def reseal(manifest: dict) -> dict:
    """Recompute the checksum the way the README documents it: sha256 of the canonical JSON
    (sorted keys, no spaces, UTF-8) of the manifest without ``manifest_sha256``."""
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return {**body, "manifest_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def mutated(manifest: dict, path: str, value, *, new_key: bool = False) -> dict:
    """A copy with the dotted field set to ``value`` (or deleted); the field must exist unless
    ``new_key`` (so a renamed field cannot make a mutation test pass vacuously)."""
    m = copy.deepcopy(manifest)
    *parents, last = path.split(".")
    node = m
    for key in parents:
        node = node[key]
    assert new_key or last in node, f"{path} is not in the manifest"
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return m


# (dotted field, the values that must each be refused). Negative/zero only where they are wrong
# for every scorer (an OC-SVM's image scores, and so its threshold, may be negative: a lone edit
# of a threshold is refused because it no longer matches the rule it was set by).
MUTATIONS: list[tuple[str, list]] = [
    ("schema_version", [1, "2", None, DELETE]),
    ("bundle_id", ["x", None, 12, DELETE]),
    ("created_at", ["yesterday", "2024-01-01T00:00:00", None, DELETE]),
    ("inspector_version", ["", None, DELETE]),
    ("thresholds.image", [NAN, INF, -INF, None, "0.5", -1.0, 0.0, DELETE]),
    ("thresholds.pixel", [NAN, INF, None, "0.5", -1.0, DELETE]),
    ("thresholds.image_rule.value", [NAN, None, "1", DELETE]),
    ("thresholds.image_rule.quantile", [NAN, 0.0, -0.5, 2.0, "0.99", None, DELETE]),
    ("thresholds.image_rule.margin", [NAN, -0.1, "0.1", None]),
    ("thresholds.image_rule.n", [0, -1, 1.5, "4", None, DELETE]),
    ("thresholds.image_rule.empirical_frr", [NAN, -0.1, 1.5, None]),
    ("thresholds.image_rule.normal_frr", [NAN, 2.0]),
    ("thresholds.image_rule.frr_upper_95", [NAN, 1.5, -0.1, None, DELETE]),
    ("thresholds.image_rule", [None, "rule", DELETE]),
    ("thresholds", [None, {}, DELETE]),
    ("preprocess.width", [0, -128, 100, 127.5, NAN, "128", None, DELETE]),
    ("preprocess.height", [0, -128, "128", None, DELETE]),
    ("preprocess.roi", [[0, 0, 0, 0], [-1, 0, 10, 10], [0, 0, 10], "all", [0, 0, 10, NAN]]),
    ("preprocess.color", ["bgr", None, DELETE]),
    ("preprocess.align", ["on", {"motion": "euclidean", "max_shift": NAN, "max_rotation_deg": 15.0,
                                 "min_correlation": 0.6},
                          {"motion": "zoom", "max_shift": 0.1, "max_rotation_deg": 15.0, "min_correlation": 0.6},
                          {"motion": "euclidean", "max_shift": 0.0, "max_rotation_deg": 15.0,
                           "min_correlation": 0.6}]),
    ("preprocess", [None, DELETE]),
    ("engine.onnx", ["../backbone.onnx", "/etc/passwd", "", None, DELETE]),
    ("engine.input_shape", [[3, 0, 128], [3, 128], [3, 64, 64], "3x128x128", [3, -128, 128], None]),
    ("engine.output_names", [[], [""], "features", None, DELETE]),
    ("engine.input_name", ["", None, DELETE]),
    ("engine.calibrated_precision", ["fp8", None, DELETE]),
    ("engine", [None, DELETE]),
    ("scorer.type", ["nope", "", None, DELETE]),
    ("scorer.params", [None, "x", [], DELETE]),
    ("scorer.params.method", ["nope", 3]),
    ("scorer.params.smoothing_sigma", [NAN, INF]),
    ("scorer.params.search", ["fp16", 16]),  # typed by the method (inspector/methods/patchcore.py Params)
    ("scorer.params.reweight", ["yes", 1]),
    ("scorer.params.bank_size", [-1, "2000"]),
    ("scorer.params.surprise", [1]),
    ("scorer", [None, DELETE]),
    ("network.kind", ["x", None, DELETE]),
    ("network.backbone", ["", None, DELETE]),
    ("network.weights_sha256", ["abc", None, DELETE]),
    ("network.stride", [0, -8, "8"]),
    ("network", [None, DELETE]),
    ("golden.images", [0, -1, "16", None]),
    ("golden.holdout", [0, -1, 100, None]),
    ("golden.sha256", ["x", None]),
    ("golden", [DELETE]),
    ("metrics.heldout_scores", [[], [NAN, 1.0, 1.0, 1.0], None]),
    ("metrics", [DELETE]),
    ("hashes", [None, {}, DELETE]),
    ("hashes.arrays", ["abc", "", None, DELETE]),
    ("hashes.onnx", ["abc", None, DELETE]),
    ("warnings", [None, "few", [""], [3], DELETE]),
    ("surprise", [1]),  # a key the writer never writes
]
CASES = [pytest.param(path, value, id=f"{path}={'deleted' if value is DELETE else repr(value)}")
         for path, values in MUTATIONS for value in values]


@pytest.fixture(scope="module")
def real_manifest(bundle_dir) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))


@pytest.fixture
def bundle_copy(tmp_path, bundle_dir) -> Path:
    copy_dir = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy_dir)
    return copy_dir


def write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")


def refusal(bundle: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert str(bundle) in msg and "manifest.json" in msg and "recalibrate" in msg, msg
    return msg


def test_the_real_manifest_loads(bundle_copy, real_manifest):
    b = load_bundle(bundle_copy)
    assert math.isfinite(b.image_threshold) and b.image_threshold == real_manifest["thresholds"]["image"]
    assert real_manifest["manifest_sha256"] == reseal(real_manifest)["manifest_sha256"]
    # re-sealing without a change is no change: the test's checksum is the documented one
    write_manifest(bundle_copy, reseal(real_manifest))
    assert load_bundle(bundle_copy).id == real_manifest["bundle_id"]


@pytest.mark.parametrize("path,value", CASES)
def test_each_mutation_is_refused_with_one_line(bundle_copy, real_manifest, path, value):
    write_manifest(bundle_copy, reseal(mutated(real_manifest, path, value, new_key=path.endswith("surprise"))))
    msg = refusal(bundle_copy)
    # the line names the section that is wrong
    assert path.split(".")[0].replace("_", " ") in msg.replace("_", " "), msg


@pytest.mark.parametrize("path,value", [("thresholds.image", 1e9), ("thresholds.image_rule.value", 0.001),
                                        ("golden.folder", "/elsewhere"), ("manifest_sha256", "0" * 64)])
def test_an_edit_that_leaves_the_checksum_stale_is_refused(bundle_copy, real_manifest, path, value):
    write_manifest(bundle_copy, mutated(real_manifest, path, value))  # not resealed
    assert "does not match its manifest_sha256" in refusal(bundle_copy)


def test_a_bundle_without_the_checksum_is_refused(bundle_copy, real_manifest):
    write_manifest(bundle_copy, mutated(real_manifest, "manifest_sha256", DELETE))
    assert "manifest_sha256" in refusal(bundle_copy)


def test_an_older_bundle_is_refused_with_recalibrate(bundle_copy, real_manifest):
    old = {k: v for k, v in real_manifest.items() if k != "manifest_sha256"}
    old["schema_version"] = 1  # what inspector wrote before the manifest covered itself
    write_manifest(bundle_copy, old)
    assert "schema version 1" in refusal(bundle_copy)


@pytest.mark.parametrize("text", ["[]", "null", '"manifest"', '{"schema_version": 2, "network": '])
def test_a_manifest_that_is_not_an_object_is_refused(bundle_copy, text):
    (bundle_copy / "manifest.json").write_text(text, encoding="utf-8")
    refusal(bundle_copy)


def test_the_writer_refuses_a_nan_threshold(tmp_path, bundle_dir, real_manifest):
    from calibration.bundle import write_bundle
    from inspector.errors import InspectorError

    import numpy as np

    sections = {k: v for k, v in real_manifest.items()
                if k not in WRITER_ADDS}
    sections = mutated(mutated(sections, "thresholds.image", NAN), "thresholds.image_rule.value", NAN)
    with np.load(bundle_dir / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    out = tmp_path / "b"
    with pytest.raises(InspectorError, match="thresholds.image.*finite"):
        write_bundle(out, sections, arrays, bundle_dir / real_manifest["engine"]["onnx"])
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no bundle, no half-written folder
