"""Shared fixtures: synthetic golden parts (drawn with OpenCV, no data of anyone's needed), a
small calibrated bundle made once per session, and a daemon config writer."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

pytest_plugins = ["tests.db_fixtures", "tests.sink_fixtures"]

# Small input keeps the suite fast on 2 CPU cores; the production default is 256x256.
TEST_SIZE = 128


def write_png(path: Path, image: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


@pytest.fixture(scope="session")
def golden_dir(tmp_path_factory) -> Path:
    from calibration.synthetic import make_part

    d = tmp_path_factory.mktemp("golden")
    rng = np.random.default_rng(1)
    for i in range(16):
        write_png(d / f"g{i:02d}.png", make_part(rng, size=TEST_SIZE))
    return d


def small_settings(**overrides):
    from pathlib import Path as _P

    from inspector.settings import settings_from_dict

    data = {"preprocess": {"size": [TEST_SIZE, TEST_SIZE]},
            "calibration": {"holdout": 0.25, "min_images": 4},
            "scorer": {"coreset": {"ratio": 0.05}}}
    data.update(overrides)
    return settings_from_dict(data, base_dir=_P("/"))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory, golden_dir) -> Path:
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("bundle") / "bundle"
    calibrate(small_settings(), golden_dir, out, progress=False)
    return out


# The engines compared against each other in parity tests all run fp32; a bundle calibrated with the
# default engine carries whatever precision that resolves to on this CPU (bf16 here), so they use this one.
FP32_ENGINE = {"type": "onnxruntime", "threads": 1}


@pytest.fixture(scope="session")
def fp32_bundle_dir(tmp_path_factory, golden_dir) -> Path:
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("bundle_fp32") / "bundle"
    calibrate(small_settings(engine=FP32_ENGINE), golden_dir, out, progress=False)
    return out


def aligned_settings():
    """small_settings with preprocess.align on. Half the 16 golden parts held out: tests judge
    moved good parts against its threshold, and a threshold from 4 held-out scores (the
    few-held-out warning) let one of them fail by a hair."""
    return small_settings(preprocess={"size": [TEST_SIZE, TEST_SIZE], "align": {"enabled": True}},
                          calibration={"holdout": 0.5, "min_images": 4})


@pytest.fixture(scope="session")
def aligned_calibration(tmp_path_factory, golden_dir):
    """The CalibrationResult of calibrating the golden parts with aligned_settings() (its bundle:
    aligned_bundle_dir). Shared: write a report only into a copy of the bundle."""
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("bundle_aligned") / "bundle"
    return calibrate(aligned_settings(), golden_dir, out, progress=False)


@pytest.fixture(scope="session")
def aligned_bundle_dir(aligned_calibration) -> Path:
    """Like bundle_dir, with preprocess.align on."""
    return aligned_calibration.bundle_dir


def moved(image: np.ndarray, dx: float, dy: float, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The image shifted and turned about its centre, and the 2x3 matrix that did it. Lanczos: a
    camera sees a turned part once; a blurrier resampling here would add blur that no real frame
    has, on top of the one resampling alignment does."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT_101), m


@pytest.fixture
def part_images():
    """A callable making (good or defective) synthetic parts at the test size."""
    from calibration.synthetic import make_part

    rng = np.random.default_rng(99)

    def make(defect=None, size=TEST_SIZE):
        return make_part(rng, size=size, defect=defect)

    return make


def daemon_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NOTIFY_SOCKET", None)
    return env
