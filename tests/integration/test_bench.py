"""`inspector bench` end to end on a tiny MVTec-layout folder of drawn parts with real PNG masks:
the operating points, per-type results, pixel AUROC at frame resolution and the masks it could
not use."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.synthetic import make_part
from tests.conftest import TEST_SIZE, write_png

FRAME = 300


def _lost_by_nearest_resize_and_subsample(row: int) -> bool:
    """Whether a one-pixel row vanished in the old bench (nearest resize to the input, then every
    second pixel)."""
    m = np.zeros((FRAME, FRAME), np.uint8)
    m[row, :] = 255
    return not cv2.resize(m, (TEST_SIZE, TEST_SIZE), interpolation=cv2.INTER_NEAREST)[::2, ::2].any()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, int]:
    root = tmp_path_factory.mktemp("mvtec_tiny")
    rng = np.random.default_rng(7)
    for sub in ("train/good", "test/good", "test/line", "test/spot", "ground_truth/line", "ground_truth/spot"):
        (root / sub).mkdir(parents=True)
    for i in range(12):
        write_png(root / "train/good" / f"{i:03d}.png", make_part(rng, size=FRAME))
    for i in range(5):
        write_png(root / "test/good" / f"{i:03d}.png", make_part(rng, size=FRAME))
    defect_pixels = 0
    rows = [r for r in range(120, 180) if _lost_by_nearest_resize_and_subsample(r)][:3]
    assert len(rows) == 3
    for i, row in enumerate(rows):  # thin bright scratches, one pixel high
        img = make_part(rng, size=FRAME)
        img[row, 90:210] = 250
        mask = np.zeros((FRAME, FRAME), np.uint8)
        mask[row, 90:210] = 255
        defect_pixels += 120
        write_png(root / "test/line" / f"{i:03d}.png", img)
        write_png(root / "ground_truth/line" / f"{i:03d}_mask.png", mask)
    for i in range(4):  # dark spots
        img = make_part(rng, size=FRAME)
        mask = np.zeros((FRAME, FRAME), np.uint8)
        cv2.circle(img, (120 + 20 * i, 150), 14, (20, 20, 20), -1)
        cv2.circle(mask, (120 + 20 * i, 150), 14, 255, -1)
        write_png(root / "test/spot" / f"{i:03d}.png", img)
        if i == 0:  # a mask at twice the frame size: resized, still used
            write_png(root / "ground_truth/spot" / f"{i:03d}_mask.png", cv2.resize(mask, (2 * FRAME, 2 * FRAME),
                                                                                    interpolation=cv2.INTER_NEAREST))
            defect_pixels += int((mask > 0).sum())
        elif i == 1:  # an empty mask: unusable
            write_png(root / "ground_truth/spot" / f"{i:03d}_mask.png", np.zeros_like(mask))
        elif i == 2:  # no mask at all: unusable
            pass
        else:
            write_png(root / "ground_truth/spot" / f"{i:03d}_mask.png", mask)
            defect_pixels += int((mask > 0).sum())
    return root, defect_pixels


@pytest.fixture(scope="module")
def result(dataset, tmp_path_factory) -> dict:
    from calibration.benchmark import run_benchmark

    cfg = tmp_path_factory.mktemp("cfg") / "bench.yaml"
    cfg.write_text(f"preprocess: {{size: [{TEST_SIZE}, {TEST_SIZE}]}}\n"
                   "calibration: {holdout: 0.25, min_images: 4}\n"
                   "scorer: {coreset: {ratio: 0.05}}\n")
    return run_benchmark(dataset[0], config=cfg, progress=False)


def test_pixel_auroc_is_at_frame_resolution_and_keeps_one_pixel_defects(dataset, result):
    assert result["pixel_auroc"] is not None
    px = result["pixel_auroc_detail"]
    assert px["resolution"] == "frame" and px["defect_pixels"] == dataset[1]
    assert px["error_bound"] < 1e-4
    # the thin lines are all lost at the old resize-then-subsample; here their type has a pixel AUROC
    assert result["per_defect_pixel_auroc"]["line"] is not None
    assert result["per_defect"]["line"]["pixel_auroc"] == result["per_defect_pixel_auroc"]["line"]


def test_masks_it_could_not_use_are_counted_and_named(result):
    masks = result["masks"]
    assert result["masks_unusable"] == 2
    assert masks["unusable"] == [{"image": "spot/001.png", "problem": "mask is empty"},
                                 {"image": "spot/002.png", "problem": "no mask file"}]
    assert masks["resized"] == ["spot/000.png"]
    assert masks["used"] == 5


def test_escape_rates_at_the_calibrated_threshold_and_at_false_reject_rates(result):
    at = result["at_threshold"]
    assert at["threshold"] == result["threshold"]
    assert at["good_images"] == 5 and at["defective_images"] == 7
    assert at["false_reject_rate"] == at["false_rejects"] / 5 and at["escape_rate"] == round(at["escapes"] / 7, 4)
    ops = result["at_false_reject_rate"]
    assert [op["target_false_reject_rate"] for op in ops] == [0.005, 0.01, 0.02]
    for op in ops:  # 5 good images: none of these rates allows a single reject
        assert op["false_rejects"] == 0 and op["false_reject_rate"] == 0.0
        assert op["escapes"] <= 7
    for kind in ("line", "spot"):
        d = result["per_defect"][kind]
        assert set(d) >= {"images", "image_auroc", "pixel_auroc", "escape_rate_at_threshold",
                          "escape_rate_at_1pct_frr"}
    assert result["per_defect"]["line"]["images"] == 3 and result["per_defect"]["spot"]["images"] == 4
    assert result["fit_seconds"] > 0


def test_the_printed_summary_shows_the_operating_point(result, tmp_path):
    from calibration.benchmark import format_result, write_json_result

    text = format_result(result)
    for words in ("image AUROC", "pixel AUROC", "escape", "0.5%", "1%", "2%", "masks unusable", "fit s", "ms/frame",
                  "spot/002.png"):
        assert words in text, words
    write_json_result(tmp_path / "r.json", result)
    assert json.loads((tmp_path / "r.json").read_text())["masks_unusable"] == 2


def test_bench_auto_calibrates_as_calibrate_auto_and_says_what_it_compared(dataset, tmp_path):
    from calibration.benchmark import format_result, run_benchmark

    cfg = tmp_path / "bench.yaml"
    cfg.write_text(f"preprocess: {{size: [{TEST_SIZE}, {TEST_SIZE}]}}\n"
                   "calibration: {holdout: 0.25, min_images: 4, synthetic_defects: 20}\n"
                   "scorer: {coreset: {ratio: 0.05}}\n")
    r = run_benchmark(dataset[0], config=cfg, progress=False, auto=True)
    names = [t["name"] for t in r["auto"]["trials"]]
    assert len(names) >= 2 and r["auto"]["chosen"] in names
    assert r["image_auroc"] is not None and r["test_images"] == 12
    assert f"auto          chose {r['auto']['chosen']}" in format_result(r)


def test_bench_auto_refuses_a_train_limit(dataset):
    from calibration.benchmark import run_benchmark
    from inspector.errors import InspectorError

    with pytest.raises(InspectorError, match="--auto"):
        run_benchmark(dataset[0], progress=False, auto=True, train_limit=5)
