"""Global context end to end: `inspector calibrate` with method global_context on synthetic golden
parts, the bundle loaded in fresh processes and run through the pipeline (identical scores each
time, defective parts fail), its arrays plain and prefixed; the same with the aligned-neighbour map."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import TEST_SIZE, daemon_env, write_png
from tests.integration.test_calibration_roundtrip import SCORE_SCRIPT


@pytest.mark.parametrize("aligned", [None, {"enabled": True, "k": 3, "dims": 16},
                                     {"enabled": True, "k": 3, "dims": 16, "key_region": [0.25, 0.25, 0.5, 0.5]}],
                         ids=["plain", "aligned_map", "variant_key"])
def test_calibrate_cli_then_pipeline_in_a_fresh_process(tmp_path, golden_dir, part_images, aligned):
    cfg = tmp_path / "c.yaml"
    section = {"grids": [1, 2], "map_grids": [2], **({"aligned_map": aligned} if aligned else {})}
    cfg.write_text(yaml.safe_dump({
        "preprocess": {"size": [TEST_SIZE, TEST_SIZE]}, "calibration": {"holdout": 0.25, "min_images": 4},
        "scorer": {"type": "memory_bank", "method": "global_context", "coreset": {"ratio": 0.05},
                   "global_context": section}}))
    bundle = tmp_path / "bundle"
    p = subprocess.run([sys.executable, "-m", "inspector.cli", "calibrate", "--golden", str(golden_dir), "--out",
                        str(bundle), "--config", str(cfg), "--quiet"], capture_output=True, text=True, timeout=600,
                       env=daemon_env())
    assert p.returncode == 0, p.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    params = manifest["scorer"]["params"]
    assert params["method"] == "global_context" and params["local"]["method"] == "patchcore"
    assert params["grids"] == [1, 2] and params["local_std"] > 0
    with np.load(bundle / "arrays.npz", allow_pickle=False) as npz:
        assert {"gc_memory_bank", "gc_region_mean", "gc_region_precision", "gc_region_z"} <= set(npz.files)
        assert npz["gc_region_precision"].shape[0] == 5  # the whole frame + 2x2 cells
        assert ("gc_aligned_golden" in npz.files) == bool(aligned)
        if aligned:
            assert npz["gc_aligned_golden"].dtype == np.float16 and npz["gc_aligned_golden"].shape[1] == 16
            assert npz["gc_aligned_basis"].shape[1] == 16 and params["aligned"]["k"] == 3
            keyed = "key_region" in aligned
            assert (params["aligned"].get("key_cells") is not None) == keyed
            assert ("<h2>Variant key</h2><div class=\"near\"><figure><img src=\"data:image/png;base64,"
                    in (bundle / "report.html").read_text()) == keyed
        else:
            assert "aligned" not in params or params["aligned"] is None

    paths = [str(write_png(tmp_path / f"t{i}.png", part_images(d)))
             for i, d in enumerate([None, "missing_hole", None, "missing_hole"])]

    def score():
        r = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(bundle), *paths], env=daemon_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    first, second = score(), score()
    assert first == second
    assert [v for _, v, _ in first] == ["pass", "fail", "pass", "fail"]
