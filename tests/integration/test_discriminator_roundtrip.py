"""The discriminator end to end: `inspector calibrate` on drawn golden parts with a config naming
it, the bundle loaded in a fresh process and run by the daemon's pipeline (backbone + head in
one engine network), scores bit-identical across processes, defects failed, good parts passed.

40 golden parts (10 held out) and 15 epochs: with 16 parts (4 held out) and 6 epochs the threshold,
a tail model fitted to 4 scores of a barely trained head, fell above the defects on a bf16 CPU
(OpenVINO bf16 rounds the head's scores differently from fp32) and the test failed there."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from tests.conftest import TEST_SIZE, daemon_env, write_png
from tests.integration.test_calibration_roundtrip import SCORE_SCRIPT

CONFIG = """preprocess: {size: [128, 128]}
calibration: {holdout: 0.25, min_images: 4, synthetic_defects: 12}
scorer:
  type: discriminative
  method: discriminator
  discriminator: {hidden_dim: 64, training: {epochs: 15, batch_size: 512, patience: 3, max_patches: 16000}}
"""


def test_calibrate_then_the_pipeline_runs_it_in_a_fresh_process(tmp_path, part_images):
    from calibration.synthetic import make_part

    golden_dir = tmp_path / "golden"
    golden_dir.mkdir()
    rng = np.random.default_rng(2)
    for i in range(40):
        write_png(golden_dir / f"g{i:02d}.png", make_part(rng, size=TEST_SIZE))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG)
    bundle = tmp_path / "bundle"
    p = subprocess.run([sys.executable, "-m", "inspector", "calibrate", "--golden", str(golden_dir), "--out",
                        str(bundle), "--config", str(cfg), "--quiet"], env=daemon_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["scorer"]["type"] == "discriminative"
    assert manifest["scorer"]["params"]["method"] == "discriminator"
    assert manifest["network"]["head"]["kind"] == "discriminator"
    assert manifest["engine"]["output_names"] == ["patch_scores"]
    assert manifest["detectability"] is not None

    kinds = [None, "missing_hole", None, "scratch", None, "missing_hole"]
    paths = [str(write_png(tmp_path / f"t{i}.png", part_images(k))) for i, k in enumerate(kinds)]

    def score():
        r = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(bundle), *paths], env=daemon_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout.strip().splitlines()[-1])

    first = score()
    assert first == score()  # bit-identical across processes
    verdicts = [v for _, v, _ in first]
    assert verdicts[1] == "fail" and verdicts[5] == "fail", first
    good = [s for (s, _, _), k in zip(first, kinds) if k is None]
    bad = [s for (s, _, _), k in zip(first, kinds) if k == "missing_hole"]
    assert min(bad) > max(good), first
