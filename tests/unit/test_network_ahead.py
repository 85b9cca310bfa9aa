"""calibrate exports the feature network while the golden images are read (calibration/network.py):
on the first image's geometry, used when the whole set's geometry agrees and exported again when
it does not; and importing calibrate does not import torch, so that the export thread does it
beside the reading."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import calibration.network as network_module
from calibration.calibrate import calibrate
from calibration.synthetic import make_part
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings, write_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def exports(monkeypatch) -> list:
    """(network input (H, W), the thread it ran on) of every feature network calibrate exports."""
    seen = []
    real = network_module.export_feature_network

    def observed(description, input_hw, out):
        seen.append((tuple(input_hw), threading.current_thread().name))
        return real(description, input_hw, out)

    monkeypatch.setattr(network_module, "export_feature_network", observed)
    return seen


def _auto_size_settings():
    return small_settings(engine=FP32_ENGINE, preprocess={"size": "auto"},
                          calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 0})


def _input_shape(bundle: Path) -> list:
    return json.loads((bundle / "manifest.json").read_text())["engine"]["input_shape"]


def test_the_network_is_exported_once_on_a_thread_beside_the_reading(exports, golden_dir, tmp_path):
    calibrate(_auto_size_settings(), golden_dir, tmp_path / "bundle", progress=False)
    assert len(exports) == 1, exports
    assert exports[0][1].startswith("network-ahead"), exports
    assert _input_shape(tmp_path / "bundle") == [3, TEST_SIZE, TEST_SIZE]


def test_a_first_image_of_another_size_is_a_wrong_guess_and_the_network_is_exported_again(exports, tmp_path):
    golden = tmp_path / "golden"
    golden.mkdir()
    rng = np.random.default_rng(3)
    write_png(golden / "a_first.png", make_part(rng, size=96))  # sorted first; the median frame is 128
    for i in range(8):
        write_png(golden / f"g{i}.png", make_part(rng, size=TEST_SIZE))
    calibrate(_auto_size_settings(), golden, tmp_path / "bundle", progress=False)
    assert [hw for hw, _ in exports] == [(96, 96), (TEST_SIZE, TEST_SIZE)], exports
    assert _input_shape(tmp_path / "bundle") == [3, TEST_SIZE, TEST_SIZE]


def test_importing_calibrate_does_not_import_torch():
    code = "import sys; import calibration.calibrate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr[-2000:]
