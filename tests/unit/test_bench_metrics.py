"""The metrics `inspector bench` reports: escape rates at operating points, and pixel AUROC at the
frame's own resolution (binned, against the exact rank-sum AUROC)."""

import cv2
import numpy as np
import pytest

from calibration.evaluation import auroc, operating_point, threshold_at_frr
from calibration.pixel_auroc import FramePixelAuroc, binned_auroc, load_mask_at_frame
from inspector.preprocess import map_to_original
from inspector.types import RoiTransform


def _transform(frame: int, net: int) -> RoiTransform:
    return RoiTransform(roi_x=0, roi_y=0, roi_w=frame, roi_h=frame, scale_x=net / frame, scale_y=net / frame,
                        original_w=frame, original_h=frame)


# -- operating points ---------------------------------------------------------------------------

def test_threshold_at_frr_is_the_smallest_with_at_most_that_share_above():
    good = np.arange(1.0, 101.0)  # 1..100
    # 1% of 100 = 1 reject allowed: 100 is above 99, nothing else is
    assert threshold_at_frr(good, 0.01) == 99.0
    assert threshold_at_frr(good, 0.02) == 98.0
    # 0.5% of 100 = 0.5 -> no reject allowed: the largest good score
    assert threshold_at_frr(good, 0.005) == 100.0
    assert threshold_at_frr(good, 0.0) == 100.0
    # floating point: 0.29 * 100 is 28.999..., still 29 rejects allowed
    assert threshold_at_frr(good, 0.29) == 71.0


def test_threshold_at_frr_with_ties_rejects_fewer_not_more():
    good = np.array([1.0, 2.0, 3.0, 3.0, 3.0])
    # 40% of 5 = 2 may be above; any threshold below 3 rejects three; so 3, rejecting none
    t = threshold_at_frr(good, 0.4)
    assert t == 3.0 and (good > t).sum() == 0


def test_threshold_at_frr_refuses_a_rate_outside_0_1():
    with pytest.raises(ValueError):
        threshold_at_frr(np.ones(3), 1.0)
    with pytest.raises(ValueError):
        threshold_at_frr(np.array([]), 0.01)


def test_operating_point_counts_escapes_at_or_below_the_threshold():
    good = np.array([0.1, 0.2, 0.3, 0.9])
    bad = np.array([0.2, 0.5, 0.9, 1.5, 2.0])
    op = operating_point(good, bad, 0.5)
    assert op["false_rejects"] == 1 and op["good_images"] == 4 and op["false_reject_rate"] == 0.25
    # 0.2 and 0.5 pass (a score equal to the threshold passes, as the judge decides)
    assert op["escapes"] == 2 and op["defective_images"] == 5 and op["escape_rate"] == 0.4
    assert op["threshold"] == 0.5


def test_operating_point_with_twenty_good_images_at_half_a_percent_is_zero_rejects():
    rng = np.random.default_rng(0)
    good = rng.normal(size=20)
    bad = rng.normal(size=30) + 2
    t = threshold_at_frr(good, 0.005)
    op = operating_point(good, bad, t)
    assert op["false_rejects"] == 0 and op["false_reject_rate"] == 0.0
    assert op["escapes"] == int((bad <= good.max()).sum())


# -- pixel AUROC ---------------------------------------------------------------------------------

def test_binned_auroc_matches_the_exact_one_within_its_bound():
    rng = np.random.default_rng(3)
    neg = rng.gamma(2.0, 1.0, 400_000).astype(np.float32)
    pos = (rng.gamma(2.0, 1.0, 5_000) + 1.5).astype(np.float32)
    exact = auroc(np.r_[np.zeros(neg.size), np.ones(pos.size)], np.r_[neg, pos])
    lo, hi = float(min(neg.min(), pos.min())), float(max(neg.max(), pos.max()))
    bins = 1 << 16
    edges_pos = np.bincount(np.minimum(((pos - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1), minlength=bins)
    edges_neg = np.bincount(np.minimum(((neg - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1), minlength=bins)
    value, bound = binned_auroc(edges_pos, edges_neg)
    assert abs(value - exact) <= bound + 1e-12
    assert bound < 1e-4


def test_binned_auroc_treats_exact_ties_like_the_rank_sum():
    # every pixel outside the ROI is exactly 0: a tie, counted half by both
    pos = np.array([0, 3, 0, 1])  # bins 1, 3
    neg = np.array([5, 2, 0, 0])
    value, _ = binned_auroc(pos, neg)
    labels = np.r_[np.zeros(7), np.ones(4)]
    scores = np.r_[np.zeros(5), np.ones(2), np.ones(3), np.full(1, 3.0)]
    assert value == pytest.approx(auroc(labels, scores))


def test_frame_pixel_auroc_equals_the_exact_auroc_of_the_maps_at_frame_resolution():
    rng = np.random.default_rng(5)
    tr = _transform(300, 64)
    acc = FramePixelAuroc()
    all_scores, all_labels = [], []
    for i in range(6):
        pmap = rng.random((64, 64)).astype(np.float32)
        gt = None
        if i >= 3:
            gt = np.zeros((300, 300), bool)
            gt[100 + 20 * i:140 + 20 * i, 50:120] = True
            pmap[(30 + 4 * i) // 1:(30 + 4 * i) + 8, 12:26] += 1.0
        acc.add("good" if gt is None else "crack", pmap, tr, gt)
        full = map_to_original(pmap, tr)
        all_scores.append(full.ravel())
        all_labels.append(np.zeros(full.size, bool) if gt is None else gt.ravel())
    exact = auroc(np.concatenate(all_labels), np.concatenate(all_scores))
    got = acc.result()
    assert got.defect_pixels == sum(int(l.sum()) for l in all_labels)
    assert abs(got.auroc - exact) <= got.error_bound + 1e-12 and got.error_bound < 1e-4
    # per type: good plus that type
    assert acc.result({"crack"}).auroc == pytest.approx(got.auroc)


def test_a_one_pixel_line_mask_on_a_900_frame_keeps_every_defect_pixel(tmp_path):
    """The old bench resized masks to the network input with nearest-neighbour and took every
    second pixel: a thin defect vanished and its pixels were scored as normal."""
    mask = np.zeros((900, 900), np.uint8)
    mask[451, 100:800] = 255  # one row, not on the grid of a 900 -> 256 nearest resize
    path = tmp_path / "000_mask.png"
    cv2.imwrite(str(path), mask)
    m = load_mask_at_frame(path, (900, 900))
    assert m.problem is None and not m.resized and int(m.mask.sum()) == 700

    tr = _transform(900, 256)
    pmap = np.zeros((256, 256), np.float32)
    pmap[128, 28:228] = 5.0  # the model sees the line
    acc = FramePixelAuroc()
    acc.add("scratch", pmap, tr, m.mask)
    acc.add("good", np.zeros((256, 256), np.float32), tr, None)
    r = acc.result()
    assert r.defect_pixels == 700
    assert r.auroc > 0.99


def test_mask_problems_are_named(tmp_path):
    assert load_mask_at_frame(None, (50, 50)).problem == "no mask file"
    bad = tmp_path / "bad_mask.png"
    bad.write_bytes(b"not a png")
    assert load_mask_at_frame(bad, (50, 50)).problem == "mask unreadable"
    empty = tmp_path / "empty_mask.png"
    cv2.imwrite(str(empty), np.zeros((50, 50), np.uint8))
    assert load_mask_at_frame(empty, (50, 50)).problem == "mask is empty"


def test_a_mask_of_another_size_is_resized_without_losing_a_thin_defect(tmp_path):
    mask = np.zeros((1000, 1000), np.uint8)
    mask[333, 200:600] = 255  # one row at a size larger than the frame
    path = tmp_path / "big_mask.png"
    cv2.imwrite(str(path), mask)
    m = load_mask_at_frame(path, (300, 300))
    assert m.problem is None and m.resized
    assert m.mask.shape == (300, 300) and m.mask.any()
    assert m.mask[99:102, 60:180].any(axis=0).all()  # the whole line survives
    small = tmp_path / "small_mask.png"
    little = np.zeros((100, 100), np.uint8)
    little[40, 10:50] = 255
    cv2.imwrite(str(small), little)
    up = load_mask_at_frame(small, (200, 200))
    assert up.resized and up.mask.shape == (200, 200) and up.mask[80:82, 20:100].all()


def test_bench_reports_what_the_fixed_pose_rule_decided():
    from calibration.benchmark import _brief, _key_note, _pose_note

    params = {"method": "global_context", "grids": [1, 2, 4], "local": {"bank_size": 2000, "grid": [1, 2]},
              "aligned_auto": {"enabled": True, "twin_ratio": 0.7854, "cut": 0.48, "images": 209, "reason": "r"}}
    brief = _brief(params)
    assert "grids" not in brief and brief["local"] == {"bank_size": 2000}
    assert brief["aligned_auto"]["twin_ratio"] == 0.7854
    assert _pose_note(brief) == "; aligned map on by the fixed-pose rule (twin ratio 0.7854)"
    few = {"aligned_auto": {"enabled": False, "twin_ratio": None, "cut": 0.48, "images": 16, "reason": "r"}}
    assert _pose_note(few) == "; aligned map off by the fixed-pose rule (16 golden images)"
    assert _pose_note({"method": "patchcore"}) == ""
    keyed = _brief({**params, "aligned": {"k": 5, "key_cells": [23, 30, 10, 15]}})
    assert keyed["aligned"]["key_cells"] == [23, 30, 10, 15]
    assert _key_note(keyed) == "; the map's references picked by the variant key (cells y 23-29, x 10-14)"
    assert _key_note(brief) == ""
