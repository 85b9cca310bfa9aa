"""Feature flow: calibrate -> save -> load in a fresh process -> identical scores, equal to the
in-process pipeline's; the bundle holds the flow head's weights as plain arrays (no pickle)."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from datetime import datetime, timezone

import numpy as np
import pytest

from tests.conftest import FP32_ENGINE, daemon_env, small_settings, write_png

SCORE_SCRIPT = r"""
import json, sys
from datetime import datetime, timezone
from engines.onnxruntime_engine import OnnxRuntimeEngineConfig
from inspector.bundle import load_bundle
from inspector.decode import read_image_file
from inspector.runtime import build_pipeline
from inspector.types import Frame
p = build_pipeline(load_bundle(sys.argv[1]), OnnxRuntimeEngineConfig(threads=1))
out = []
for path in sys.argv[2:]:
    img = read_image_file(path, max_pixels=10**8)
    v = p.inspect([Frame(id=path, source="t", captured_at=datetime.now(timezone.utc), image=img)])[0]
    out.append([v.score, v.kind.value, float(v.pixel_map.max())])
print(json.dumps(out))
"""


def _settings():
    return small_settings(scorer={"type": "flow", "flow": {"channels": 16, "blocks": 4, "hidden": 16,
                                                           "training": {"epochs": 10, "batch_size": 4, "lr": 0.003}}},
                          engine=FP32_ENGINE)


@pytest.fixture(scope="module")
def flow_bundle(tmp_path_factory, golden_dir):
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("flow_rt") / "bundle"
    calibrate(_settings(), golden_dir, out, progress=False)
    return out


def test_flow_bundle_round_trip_in_a_fresh_process(tmp_path, flow_bundle, part_images):
    from inspector.bundle import load_bundle
    from inspector.decode import read_image_file
    from inspector.runtime import build_pipeline
    from inspector.types import Frame

    paths = [str(write_png(tmp_path / f"t{i}.png", part_images(d)))
             for i, d in enumerate([None, "missing_hole", None, "missing_hole"])]

    def score():
        p = subprocess.run([sys.executable, "-c", SCORE_SCRIPT, str(flow_bundle), *paths], env=daemon_env(),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout.strip().splitlines()[-1])

    first, second = score(), score()
    assert first == second  # bit-identical across processes
    assert [v for _, v, _ in first] == ["pass", "fail", "pass", "fail"], first

    bundle = load_bundle(flow_bundle)
    pipeline = build_pipeline(bundle, _settings().engine)
    try:
        now = datetime.now(timezone.utc)
        here = pipeline.inspect([Frame(id=p, source="t", captured_at=now, image=read_image_file(p, max_pixels=10**8))
                                 for p in paths])
    finally:
        pipeline.engine.close()
    np.testing.assert_allclose([v.score for v in here], [s for s, _, _ in first], rtol=1e-5)

    manifest = json.loads((flow_bundle / "manifest.json").read_text())
    assert manifest["scorer"]["type"] == "flow" and manifest["scorer"]["params"]["method"] == "flow"
    assert manifest["network"]["head"]["kind"] == "flow"
    with zipfile.ZipFile(flow_bundle / "arrays.npz") as z:
        assert all(n.endswith(".npy") for n in z.namelist())
    with np.load(flow_bundle / "arrays.npz", allow_pickle=False) as npz:
        assert npz["head.projection"].shape[0] == 16 and npz["head.mixing"].shape == (4, 16, 16)
