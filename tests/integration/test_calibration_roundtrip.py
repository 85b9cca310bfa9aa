"""fit -> save -> load in a fresh process -> identical scores; the bundle holds no pickle."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np

from engines.openvino_engine import default_precision
from tests.conftest import daemon_env, write_png

SCORE_SCRIPT = r"""
import json, sys
from datetime import datetime, timezone
from inspector.bundle import load_bundle
from inspector.decode import read_image_file
from inspector.runtime import build_pipeline
from inspector.settings import Settings
from inspector.types import Frame
b = load_bundle(sys.argv[1])
p = build_pipeline(b, Settings().engine)
out = []
for path in sys.argv[2:]:
    img = read_image_file(path, max_pixels=10**8)
    v = p.inspect([Frame(id=path, source="t", captured_at=datetime.now(timezone.utc), image=img)])[0]
    out.append([v.score, v.kind.value, float(v.pixel_map.max())])
print(json.dumps(out))
"""


def test_roundtrip_in_a_fresh_process(tmp_path, bundle_dir, part_images):
    paths = []
    for i, defect in enumerate([None, "missing_hole", None, "missing_hole"]):
        paths.append(str(write_png(tmp_path / f"t{i}.png", part_images(defect))))

    def score():
        p = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(bundle_dir), *paths], env=daemon_env(),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])

    first, second = score(), score()
    assert first == second  # bit-identical across processes
    verdicts = [v for _, v, _ in first]
    assert verdicts[1] == "fail" and verdicts[3] == "fail"

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    # the default engine (openvino, precision auto) records the precision it resolved to on this CPU
    assert manifest["thresholds"]["image"] > 0
    assert manifest["engine"]["calibrated_engine"] == "openvino"
    assert manifest["engine"]["calibrated_precision"] == default_precision()
    # arrays.npz holds plain arrays only (np.load refuses object arrays without allow_pickle)
    with zipfile.ZipFile(bundle_dir / "arrays.npz") as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    with np.load(bundle_dir / "arrays.npz", allow_pickle=False) as npz:
        assert npz["memory_bank"].dtype == np.float32


def test_calibrate_command_summary_and_skips(tmp_path, golden_dir):
    import shutil

    g = tmp_path / "golden"
    shutil.copytree(golden_dir, g)
    (g / "broken.png").write_bytes(b"not an image")
    (g / "empty.jpg").write_bytes(b"")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("preprocess: {size: [128, 128]}\ncalibration: {holdout: 0.25, min_images: 4}\n"
                   "scorer: {coreset: {ratio: 0.05}}\n")
    # --out is a folder of someone's files: --force replaces it, keeping them in b.previous
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("my notes")
    p = subprocess.run([sys.executable, "-m", "inspector", "calibrate", "--golden", str(g), "--out",
                        str(tmp_path / "b"), "--config", str(cfg), "--quiet", "--force"], env=daemon_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "b.previous" / "notes.txt").read_text() == "my notes"
    assert not list(tmp_path.glob(".b.*"))  # no temporary folder left behind
    assert "16 used, 2 skipped" in p.stdout
    assert "broken.png" in p.stdout and "empty.jpg" in p.stdout
    assert "false rejects expected" in p.stdout and "threshold" in p.stdout
    # 4 held-out images set the threshold: calibrate says how little that is
    assert "95% upper bound" in p.stdout and "warning       only 4 held-out golden images" in p.stdout, p.stdout
    assert (tmp_path / "b" / "report.html").exists()

    # too few readable images is fatal, with one line
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(golden_dir.iterdir())[:2]:
        shutil.copy(f, few)
    p = subprocess.run([sys.executable, "-m", "inspector", "calibrate", "--golden", str(few), "--out",
                        str(tmp_path / "b2"), "--config", str(cfg), "--quiet"], env=daemon_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 2 and "need at least 4" in p.stderr and "Traceback" not in p.stderr
