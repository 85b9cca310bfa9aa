"""`inspector build-engine` against the TensorRT/pycuda stand-in."""
from __future__ import annotations

import argparse
import json
import sys

import pytest

from tests.unit._engine_fixtures import INPUT_NAME, OUTPUT_NAMES, export_tiny_onnx
from tests.unit._trt_fakes import FakeGpu, install
from inspector.commands import build_engine
from inspector.errors import BundleError, InspectorError


@pytest.fixture
def gpu(monkeypatch):
    return install(monkeypatch, FakeGpu())


@pytest.fixture
def bundle(tmp_path):
    b = tmp_path / "bundle"
    b.mkdir()
    export_tiny_onnx(b / "backbone.onnx")
    manifest = {"engine": {"onnx": "backbone.onnx", "input_name": INPUT_NAME, "input_shape": [3, 32, 32],
                           "output_names": list(OUTPUT_NAMES)}}
    (b / "manifest.json").write_text(json.dumps(manifest))
    return b


def parse(*argv):
    p = argparse.ArgumentParser()
    build_engine.add_arguments(p)
    return p.parse_args(list(argv))


def test_builds_then_reports_cached(gpu, bundle, capsys):
    assert build_engine.run(parse("--bundle", str(bundle), "--max-batch", "2", "--precision", "fp32")) == 0
    assert capsys.readouterr().out.startswith("built ")
    assert gpu.builds[0]["profile"]["images"][2] == [2, 3, 32, 32] and gpu.builds[0]["flags"] == set()
    assert (bundle / "engine-cache" / "backbone.plan").exists()
    build_engine.run(parse("--bundle", str(bundle), "--max-batch", "2", "--precision", "fp32"))
    assert capsys.readouterr().out.startswith("cached ") and len(gpu.builds) == 1
    build_engine.run(parse("--bundle", str(bundle), "--max-batch", "2", "--precision", "fp32", "--force"))
    assert len(gpu.builds) == 2


def test_config_engine_section_gives_defaults(gpu, bundle, tmp_path):
    cfg = tmp_path / "inspector.yaml"
    cfg.write_text(f"bundle: {bundle}\nengine:\n  type: tensorrt\n  max_batch: 3\n  precision: fp32\n")
    build_engine.run(parse("--config", str(cfg)))
    assert gpu.builds[0]["profile"]["images"][2] == [3, 3, 32, 32]


def test_bad_bundle_and_missing_backend(monkeypatch, tmp_path, bundle):
    with pytest.raises(BundleError, match="no manifest.json"):
        build_engine.run(parse("--bundle", str(tmp_path)))
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(InspectorError, match="inspector\\[tensorrt\\]"):
        build_engine.run(parse("--bundle", str(bundle)))
    with pytest.raises(InspectorError, match="--max-batch 0"):
        build_engine.run(parse("--bundle", str(bundle), "--max-batch", "0"))


def test_registered_in_cli():
    from inspector.cli import COMMANDS

    assert ("build-engine", "inspector.commands.build_engine") in [(c, m) for c, m, _ in COMMANDS]
