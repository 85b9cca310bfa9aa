"""Issue 16's methods through the real commands: `inspector calibrate` (with --defects where the
method trains on them) -> the bundle scores identically in two fresh processes and fails the
defects -> the daemon runs it (rows with verdicts). Tiny training settings: behaviour, not accuracy."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import daemon_env, write_png
from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, rows, wait_for
from tests.integration.test_calibration_roundtrip import SCORE_SCRIPT
from tests.unit._scorer_data import plant_defect

SCORERS = {
    "anoddpm": {"type": "reconstruction", "method": "anoddpm",  # one denoising step: runs on a CPU
                "anoddpm": {"width": 32, "train_steps": 300, "batch_size": 4, "t_lambda": 100, "denoise_steps": 1}},
    "fanogan": {"type": "reconstruction", "method": "fanogan",
                "fanogan": {"latent_dim": 8, "hidden": 64, "disc_hidden": 32, "gan_steps": 500, "encoder_steps": 500,
                            "batch_size": 256, "n_critic": 3}},
    "supervised": {"type": "supervised", "coreset": {"ratio": 0.05},
                   "classifier": {"hidden": 16, "training": {"epochs": 40, "batch_size": 4, "lr": 0.003,
                                                             "patience": 40}}},
}


def _calibrate(tmp_path, golden_dir, part_images, scorer: dict):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"preprocess": {"size": [128, 128]},
                                   "calibration": {"holdout": 0.25, "min_images": 4, "synthetic_defects": 0},
                                   "scorer": scorer}))
    args = [sys.executable, "-m", "inspector", "calibrate", "--golden", str(golden_dir), "--out",
            str(tmp_path / "b"), "--config", str(cfg), "--quiet"]
    if scorer["type"] == "supervised":
        defects = tmp_path / "defects"
        defects.mkdir()
        for i, kind in enumerate(["scratch", "spot", "missing_hole"] * 3):
            write_png(defects / f"d{i}.png", part_images(kind))
        without = subprocess.run(args, env=daemon_env(), capture_output=True, text=True, timeout=300)
        assert without.returncode == 2 and "--defects DIR" in without.stderr, without.stderr
        args += ["--defects", str(defects)]
    p = subprocess.run(args, env=daemon_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    return tmp_path / "b", p.stdout


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_calibrate_roundtrip_and_daemon(tmp_path, golden_dir, part_images, name):
    bundle, out = _calibrate(tmp_path, golden_dir, part_images, SCORERS[name])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["scorer"]["params"]["method"] == name
    if name == "supervised":
        assert any("trained this scorer" in w for w in manifest["warnings"])

    goods = [part_images(), part_images()]  # each with a bright disc planted: a kind no method trained on
    paths = [str(write_png(tmp_path / f"t{i}.png", im))
             for i, im in enumerate([goods[0], plant_defect(goods[0]), goods[1], plant_defect(goods[1])])]

    def score():
        p = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(bundle), *paths], env=daemon_env(),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])

    first, second = score(), score()
    assert first == second  # bit-identical across processes
    assert [v for _, v, _ in first][1] == "fail" and [v for _, v, _ in first][3] == "fail", first

    ws = make_workspace(tmp_path / "ws", bundle)
    d = Daemon(ws).start()
    try:
        drop_image(ws.inbox, "good.png", goods[0])  # the pair scored above, now through the daemon
        drop_image(ws.inbox, "bad.png", plant_defect(goods[0]))
        wait_for(lambda: len(rows(ws.db)) == 2, 120, "two rows", d)
        verdicts = {r["origin_name"]: r["verdict"] for r in rows(ws.db)}
        assert verdicts["bad.png"] == "fail", verdicts
        assert verdicts["good.png"] in ("pass", "fail")  # a verdict, not an error
        assert d.terminate() == 0
    finally:
        d.stop()
