"""The discriminator end to end: `inspector calibrate` on drawn golden parts with a config naming
it, the bundle loaded in a fresh process and run by the daemon's pipeline (backbone + head in
one engine network), scores bit-identical across processes, defects failed, good parts passed."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import daemon_env, write_png
from tests.integration.test_calibration_roundtrip import SCORE_SCRIPT

CONFIG = """preprocess: {size: [128, 128]}
calibration: {holdout: 0.25, min_images: 4, synthetic_defects: 12}
scorer:
  type: discriminative
  method: discriminator
  discriminator: {hidden_dim: 64, training: {epochs: 6, batch_size: 512, patience: 3, max_patches: 16000}}
"""


def test_calibrate_then_the_pipeline_runs_it_in_a_fresh_process(tmp_path, golden_dir, part_images):
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
