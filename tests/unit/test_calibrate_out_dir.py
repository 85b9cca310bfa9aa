"""`calibrate --out DIR` never deletes what is not a bundle: a non-empty folder without a
manifest.json is refused (unless --force), the golden folder and any folder holding it always
are; a new bundle is swapped in whole, the one it replaces kept as BUNDLE.previous, and a
calibration that fails leaves the old bundle as it was."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import daemon_env
from tests.unit.test_manifest import WRITER_ADDS

CONFIG = ("preprocess: {size: [128, 128]}\ncalibration: {holdout: 0.25, min_images: 4}\n"
          "scorer: {coreset: {ratio: 0.05}}\n")


def calibrate_cli(tmp_path: Path, golden: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    return subprocess.run([sys.executable, "-m", "inspector", "calibrate", "--golden", str(golden), "--out", str(out),
                           "--config", str(cfg), "--quiet", *extra], env=daemon_env(), capture_output=True, text=True,
                          timeout=600)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative name -> sha256)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused_one_line(p: subprocess.CompletedProcess, *words: str) -> str:
    lines = p.stderr.splitlines()
    assert p.returncode != 0 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture
def golden(tmp_path, golden_dir) -> Path:
    g = tmp_path / "golden"
    shutil.copytree(golden_dir, g)
    return g


def refused_in_process(golden: Path, out: Path, *, force: bool = False) -> str:
    """calibrate() itself refuses before doing any work; returns the message."""
    from calibration.calibrate import calibrate
    from inspector.errors import InspectorError
    from tests.conftest import small_settings

    with pytest.raises(InspectorError) as info:
        calibrate(small_settings(), golden, out, progress=False, force=force)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_out_equal_to_the_golden_folder_is_refused(tmp_path, golden):
    before = snapshot(golden)
    assert_refused_one_line(calibrate_cli(tmp_path, golden, golden), str(golden), "golden")
    assert "golden" in refused_in_process(golden, golden, force=True)  # never, not even with --force
    assert snapshot(golden) == before


def test_out_that_contains_the_golden_folder_is_refused(tmp_path, golden):
    (tmp_path / "notes.txt").write_text("keep me")
    before = snapshot(tmp_path)
    for force in (False, True):
        assert "contains the golden folder" in refused_in_process(golden, tmp_path, force=force)
    assert snapshot(tmp_path) == before


def test_out_whose_previous_is_the_golden_folder_is_refused(tmp_path, golden_dir):
    """BUNDLE.previous is replaced by a calibration too."""
    golden = tmp_path / "b.previous"
    shutil.copytree(golden_dir, golden)
    before = snapshot(golden)
    assert "b.previous is the golden folder" in refused_in_process(golden, tmp_path / "b", force=True)
    assert snapshot(golden) == before


def test_a_non_empty_folder_that_is_not_a_bundle_is_refused(tmp_path, golden):
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "notes.txt").write_text("my notes")
    (precious / "sub" / "more.txt").write_text("more")
    before = snapshot(precious)
    p = calibrate_cli(tmp_path, golden, precious)
    assert_refused_one_line(p, str(precious), "not a bundle", "--force")
    assert snapshot(precious) == before
    assert not list(tmp_path.glob(".precious*")) and not (tmp_path / "precious.previous").exists()
    # (--force replacing it, its files kept in precious.previous: the full calibrate run in
    # tests/integration/test_calibration_roundtrip.py)


def test_a_previous_folder_that_is_not_a_bundle_is_refused(tmp_path, golden):
    previous = tmp_path / "b.previous"
    previous.mkdir()
    (previous / "notes.txt").write_text("my notes")
    assert "b.previous is not empty and is not a bundle" in refused_in_process(golden, tmp_path / "b")
    assert (previous / "notes.txt").read_text() == "my notes"


def test_a_file_as_out_is_refused(tmp_path, golden):
    f = tmp_path / "bundle"
    f.write_text("a file")
    assert "is a file" in refused_in_process(golden, f, force=True)
    assert f.read_text() == "a file"


# ---------------------------------------------------------------- the swap (write_bundle directly: no refit)
def sections_and_arrays(bundle_dir: Path) -> tuple[dict, dict]:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    sections = {k: v for k, v in manifest.items()
                if k not in WRITER_ADDS}
    with np.load(bundle_dir / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return sections, arrays


def test_rewriting_a_bundle_keeps_the_old_one_as_previous(tmp_path, bundle_dir):
    from calibration.bundle import write_bundle
    from inspector.bundle import load_bundle

    sections, arrays = sections_and_arrays(bundle_dir)
    onnx = bundle_dir / sections["engine"]["onnx"]
    out = tmp_path / "b"
    first = write_bundle(out, sections, arrays, onnx)
    second_sections = json.loads(json.dumps(sections))
    second_sections["golden"]["seed"] = 7
    second = write_bundle(out, second_sections, arrays, onnx)
    assert load_bundle(out).manifest.golden.seed == 7 and second.bundle_id == load_bundle(out).id
    assert load_bundle(tmp_path / "b.previous").manifest.golden.seed == first.golden.seed
    third_sections = json.loads(json.dumps(sections))
    third_sections["golden"]["seed"] = 9
    write_bundle(out, third_sections, arrays, onnx)  # the older .previous is replaced
    assert load_bundle(tmp_path / "b.previous").manifest.golden.seed == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "b.previous"]


def test_a_write_that_fails_leaves_the_old_bundle_untouched(tmp_path, bundle_dir, monkeypatch):
    import calibration.bundle as writer

    out = tmp_path / "b"
    shutil.copytree(bundle_dir, out)
    before = snapshot(out)
    sections, arrays = sections_and_arrays(bundle_dir)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.np, "savez", disk_full)
    with pytest.raises(OSError):
        writer.write_bundle(out, sections, arrays, bundle_dir / sections["engine"]["onnx"])
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folder, no .previous


def test_a_failed_calibration_leaves_the_old_bundle_untouched(tmp_path, bundle_dir, golden_dir):
    out = tmp_path / "b"
    shutil.copytree(bundle_dir, out)
    before = snapshot(out)
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(golden_dir.iterdir())[:2]:
        shutil.copy(f, few)
    assert "need at least 4" in refused_in_process(few, out)
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["b", "few"]
