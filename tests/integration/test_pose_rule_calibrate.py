"""`inspector calibrate` with global context's ``aligned_map: {enabled: auto}``: on synthetic plates in
a fixture the rule turns the aligned map on, the bundle holds the map and the decision, and the
summary and report say what was decided and from what."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import yaml

from calibration.methods import pose
from tests.conftest import TEST_SIZE, daemon_env, write_png


def test_calibrate_auto_turns_the_map_on_for_a_fixed_part_and_says_why(tmp_path):
    from calibration.synthetic import make_part

    golden = tmp_path / "golden"
    golden.mkdir()
    rng = np.random.default_rng(11)
    for i in range(pose.SUBSET + 4):
        write_png(golden / f"g{i:03d}.png", make_part(rng, size=TEST_SIZE))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({
        "preprocess": {"size": [TEST_SIZE, TEST_SIZE]}, "calibration": {"holdout": 0.25, "synthetic_defects": 8},
        "scorer": {"type": "memory_bank", "method": "global_context", "coreset": {"size": 200},
                   "global_context": {"aligned_map": {"enabled": "auto", "k": 3, "dims": 8, "image_weight": 1.0}}}}))
    bundle = tmp_path / "bundle"
    p = subprocess.run([sys.executable, "-m", "inspector.cli", "calibrate", "--golden", str(golden), "--out",
                        str(bundle), "--config", str(cfg), "--quiet"], capture_output=True, text=True, timeout=600,
                       env=daemon_env())
    assert p.returncode == 0, p.stderr
    params = json.loads((bundle / "manifest.json").read_text())["scorer"]["params"]
    d = params["aligned_auto"]
    assert d["enabled"] is True and d["twin_ratio"] >= d["cut"] == 0.48 and d["images"] == pose.SUBSET + 4
    assert params["aligned"]["image_weight"] == 1.0 and params["aligned"]["dims"] == 8
    with np.load(bundle / "arrays.npz", allow_pickle=False) as npz:
        assert npz["gc_aligned_golden"].shape[1] == 8
    line = next(s for s in p.stdout.splitlines() if s.startswith("aligned map"))
    assert "on (auto: twin ratio" in line and "fixed pose" in line
    assert "<th>aligned map</th><td>on (auto: twin ratio" in (bundle / "report.html").read_text()
