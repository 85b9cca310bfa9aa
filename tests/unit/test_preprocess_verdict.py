"""Preprocessing keeps the way back to the original image: regions and heatmaps land where
the defect is in the original frame, ROI and resize included."""
import numpy as np
import pytest

from inspector.decode import FrameError
from inspector.preprocess import PreprocessSpec, Preprocessor, map_to_original
from inspector.verdict import Judge


def test_roi_resize_inverse_mapping():
    img = np.zeros((300, 400, 3), np.uint8)
    pre = Preprocessor(PreprocessSpec(64, 64, roi=(100, 50, 200, 200)))
    chw, tr = pre.prepare(img)
    assert chw.shape == (3, 64, 64) and chw.dtype == np.float32
    pmap = np.zeros((64, 64), np.float32)
    pmap[32:40, 16:24] = 10.0  # a blob in network coordinates
    judge = Judge(image_threshold=1.0, pixel_threshold=5.0, min_region_fraction=0.0)
    (r,) = judge.regions(pmap, tr)
    # network px -> ROI px is x200/64 = 3.125; plus the ROI offset
    assert (r.x, r.y) == (100 + 50, 50 + 100)
    assert (r.w, r.h) == (25, 25)
    full = map_to_original(pmap, tr)
    assert full.shape == (300, 400)
    assert full[50 + 110, 100 + 60] == pytest.approx(10.0) and full[10, 10] == 0.0


def test_grey_and_colour_give_rgb_in_unit_range():
    pre = Preprocessor(PreprocessSpec(64, 64))
    grey = np.full((100, 80), 255, np.uint8)
    chw, _ = pre.prepare(grey)
    assert chw.shape == (3, 64, 64) and chw.max() == pytest.approx(1.0)
    bgr = np.zeros((100, 80, 3), np.uint8)
    bgr[..., 0] = 255  # blue in BGR
    chw, _ = pre.prepare(bgr)
    assert chw[2].mean() == pytest.approx(1.0) and chw[0].mean() == 0.0  # becomes the B plane of RGB


def test_roi_outside_the_image_is_a_frame_error():
    pre = Preprocessor(PreprocessSpec(64, 64, roi=(1000, 1000, 50, 50)))
    with pytest.raises(FrameError, match="outside"):
        pre.prepare(np.zeros((100, 100, 3), np.uint8))


def test_fail_without_pixel_crossing_still_points_at_the_peak():
    judge = Judge(image_threshold=1.0, pixel_threshold=100.0)
    pre = Preprocessor(PreprocessSpec(64, 64))
    _, tr = pre.prepare(np.zeros((64, 64, 3), np.uint8))
    pmap = np.ones((64, 64), np.float32)
    pmap[10:20, 40:50] = 5.0
    regions = judge.regions(pmap, tr)
    assert len(regions) == 1 and (regions[0].x, regions[0].y) == (40, 10)


@pytest.mark.parametrize("score", [float("nan"), float("inf"), float("-inf")])
def test_a_score_that_is_not_a_number_never_passes_a_part(score):
    # NaN compares False against any threshold: it passed parts before
    from inspector.types import VerdictKind

    assert Judge(1.0, None).decide(score) is VerdictKind.FAIL
    assert Judge(1.0, None).decide(0.5) is VerdictKind.PASS


def test_a_diffuse_fail_on_a_registered_frame_points_at_its_peak_not_the_whole_part():
    # with alignment (pose normalisation most of all) the map is 0 outside the registered part:
    # the half-height fallback must take its floor from the part, not from that fill
    import numpy as np

    from inspector.types import RoiTransform
    from inspector.verdict import Judge

    rng = np.random.default_rng(0)
    pixel_map = np.zeros((128, 128), np.float32)
    pixel_map[40:72, 16:112] = 20.0 + rng.uniform(-1, 1, (32, 96))  # the part's box, cut from the frame
    pixel_map[52:58, 80:86] = 30.0  # the diffuse fail's peak, under the pixel threshold
    tr = RoiTransform(0, 0, 128, 128, 1.0, 1.0, 128, 128, align=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    regions = Judge(10.0, 40.0).regions(pixel_map, tr)
    assert regions and regions[0].w * regions[0].h <= 100, regions[0]
