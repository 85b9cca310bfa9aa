"""Pose normalisation (preprocess.align motion pose, inspector/pose.py): an elongated part at any
angle and place comes out in one canonical pose, the map of a defect goes back onto the frame's
defect, parts without an axis or without a part are refused, and calibration cuts the box."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from inspector.align import AlignSpec, unalign_map
from inspector.decode import FrameError
from inspector.pose import PoseAligner, measure, pose_warp, warp_to_box

SIDE = 128
BOX = (96, 32)


def screw(angle: float, cx: float, cy: float, spot: bool = False, seed: int = 0, burr: bool = False) -> np.ndarray:
    """A dark 'screw' (a 60x8 shaft, a 6x20 head at one end) on a light, slightly noisy floor,
    turned by ``angle`` degrees about its middle at (cx, cy); uint8 grey [SIDE, SIDE]. spot: a
    bright 4x4 defect on the shaft 15 px right of the middle; burr: a dark 8x8 bump on the
    shaft's side, 15 px right of the middle and 8 below (its centre)."""
    rng = np.random.default_rng(seed)
    canon = np.full((SIDE, SIDE), 200, np.uint8)
    c = SIDE // 2
    canon[c - 4:c + 4, c - 30:c + 30] = 60  # shaft
    canon[c - 10:c + 10, c - 33:c - 27] = 50  # head, left
    canon[c - 2:c + 2, c + 30:c + 34] = 70  # tip
    if spot:
        canon[c - 2:c + 2, c + 13:c + 17] = 250
    if burr:
        canon[c + 4:c + 12, c + 11:c + 19] = 60
    m = cv2.getRotationMatrix2D((c, c), angle, 1.0)
    m[:, 2] += (cx - c, cy - c)
    img = cv2.warpAffine(canon, m, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderValue=200)
    return np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)


def grey(u8: np.ndarray) -> np.ndarray:
    return u8.astype(np.float32) / 255.0


POSES = [(0, 64, 64), (37, 60, 70), (90, 66, 58), (151, 64, 64), (200, 70, 62), (-75, 58, 66), (300, 64, 70)]


def canonical(aligner: PoseAligner, u8: np.ndarray) -> np.ndarray:
    g = grey(u8)
    return aligner.warp_image(g, aligner.estimate(g))


def test_any_turn_and_place_gives_one_canonical_pose_head_left():
    aligner = PoseAligner(None, 0.6, BOX)
    outs = [canonical(aligner, screw(a, x, y, seed=i)) for i, (a, x, y) in enumerate(POSES)]
    for o in outs[1:]:
        assert np.abs(o - outs[0]).mean() < 0.04  # the same picture, up to resampling and noise
    dark = outs[0] < 0.5
    cols = dark.sum(axis=0)
    assert cols[:BOX[0] // 3].max() >= 16 > cols[-BOX[0] // 3:].max()  # the wide head on the left


def rod(angle: float, cx: float, cy: float) -> np.ndarray:
    """A dark 70x10 rod with equally wide ends and a lighter band near its left end (the only
    thing that tells its ends apart), turned and placed like ``screw``."""
    canon = np.full((SIDE, SIDE), 200, np.uint8)
    c = SIDE // 2
    canon[c - 5:c + 5, c - 35:c + 35] = 40
    canon[c - 5:c + 5, c - 22:c - 8] = 115
    m = cv2.getRotationMatrix2D((c, c), angle, 1.0)
    m[:, 2] += (cx - c, cy - c)
    return cv2.warpAffine(canon, m, (SIDE, SIDE), flags=cv2.INTER_LINEAR, borderValue=200)


def test_a_part_at_the_edge_gets_background_not_a_mirrored_copy_of_itself():
    g = grey(screw(0, 36, 64))  # the head 3 px from the left edge: the box leaves the canvas by 12 px
    aligner = PoseAligner(None, 0.6, BOX)
    box = aligner.warp_image(g, aligner.estimate(g))
    assert box[:, :10].min() > 0.6  # floor only (the floor is 200/255, the part 50-70/255)
    assert box[:, 14:22].min() < 0.3  # the head itself is there


def test_reference_settles_which_end_is_which():
    """Ends equally wide: the width rule guesses, the golden reference decides."""
    box = (96, 24)
    first = grey(rod(0, 64, 64))
    reference = warp_to_box(first, pose_warp(measure(first), box), box)
    if reference[:, :48].mean() < reference[:, 48:].mean():  # the band left, whatever the guess was
        reference = reference[::-1, ::-1].copy()
    aligner = PoseAligner(reference, 0.6)
    guessed_wrong = 0
    for angle, cx, cy in [(0, 64, 64), (180, 64, 64), (123, 62, 66), (303, 66, 60), (-40, 60, 64), (140, 64, 64)]:
        g = grey(rod(angle, cx, cy))
        guess, other = pose_warp(measure(g), box), pose_warp(measure(g), box, flip=True)
        warp = aligner.estimate(g)
        if np.allclose(warp, other):
            guess, other = other, guess
            guessed_wrong += 1
        assert np.allclose(warp, guess)
        assert np.abs(warp_to_box(g, warp, box) - reference).mean() < 0.03 < \
            np.abs(warp_to_box(g, other, box) - reference).mean()
    assert guessed_wrong > 0  # the width rule alone would have put some rods the wrong way round


def test_map_in_the_canonical_box_goes_back_onto_the_frames_defect():
    reference = canonical(PoseAligner(None, 0.6, BOX), screw(0, 64, 64))
    aligner = PoseAligner(reference, 0.6)
    for angle, cx, cy in [(37, 60, 70), (200, 70, 62)]:
        frame = grey(screw(angle, cx, cy, spot=True))
        warp = aligner.estimate(frame)
        canon = aligner.warp_image(frame, warp)
        diff = cv2.GaussianBlur(np.abs(canon - reference), (5, 5), 0)  # the map: the defect in the box
        back = unalign_map(diff, warp.ravel(), (SIDE, SIDE))
        assert back.shape == (SIDE, SIDE)
        y, x = np.unravel_index(np.argmax(back), back.shape)
        # where the spot is in the frame: the canonical spot (15 px right of the middle) turned
        t = math.radians(angle)
        ex, ey = cx + 15 * math.cos(t), cy - 15 * math.sin(t)
        assert math.hypot(x - ex, y - ey) < 3.0


def test_no_part_or_a_round_part_or_the_wrong_part_is_an_error():
    reference = canonical(PoseAligner(None, 0.6, BOX), screw(0, 64, 64))
    aligner = PoseAligner(reference, 0.6)
    with pytest.raises(FrameError, match="no part found"):
        aligner.estimate(np.full((SIDE, SIDE), 0.8, np.float32))
    disc = np.full((SIDE, SIDE), 200, np.uint8)
    cv2.circle(disc, (64, 64), 30, 50, -1)
    with pytest.raises(FrameError, match="not elongated"):
        aligner.estimate(grey(disc))
    bar = np.full((SIDE, SIDE), 200, np.uint8)
    bar[40:90, 50:60] = 50  # elongated, but nothing like the screw
    bar[50:60, 20:110] = 50
    with pytest.raises(FrameError, match="matches the golden reference poorly"):
        PoseAligner(reference, 0.9).estimate(grey(bar))


def test_golden_pose_cuts_the_box_and_refuses_round_parts():
    from calibration.golden import GoldenSet
    from calibration.reference import golden_pose
    from inspector.errors import InspectorError
    from inspector.preprocess import Preprocessor, PreprocessSpec

    images = [screw(a, x, y, seed=i) for i, (a, x, y) in enumerate(POSES)] + [np.full((SIDE, SIDE), 200, np.uint8)]
    golden = GoldenSet([f"g{i}.png" for i in range(len(images))], images, [], "sha")
    spec = PreprocessSpec(SIDE, SIDE, None, AlignSpec(motion="pose"), (SIDE, SIDE))
    kept, reference, posed = golden_pose(golden, spec, (256, 256))
    assert kept.names == [f"g{i}.png" for i in range(len(POSES))]  # the empty frame is left out, said why
    assert "no part found" in kept.skipped[0][1]
    bw, bh = posed.work_size
    assert 64 <= bw <= 88 and 24 <= bh <= 40 and bw % 8 == 0 and bh % 8 == 0  # the part's box, not the frame
    assert posed.canvas == (SIDE, SIDE) and reference.shape == (bh, bw)
    assert PreprocessSpec.from_json(posed.to_json()) == posed
    final = PoseAligner(reference, 0.6)  # every golden image kept registers to the reference the line uses
    assert all(final.estimate(grey(im)) is not None for im in kept.images)
    # the preprocessor turns a frame into the box and records the warp that takes maps back
    pre = Preprocessor(posed, reference=reference)
    work, tr = pre.prepare(cv2.cvtColor(screw(111, 60, 66), cv2.COLOR_GRAY2BGR))
    assert work.shape[1:] == (posed.grid.work_h, posed.grid.work_w) and tr.align is not None
    assert (round(tr.roi_w * tr.scale_x), round(tr.roi_h * tr.scale_y)) == (SIDE, SIDE)

    discs = []
    for r in range(20, 26):
        d = np.full((SIDE, SIDE), 200, np.uint8)
        cv2.circle(d, (64, 64), r, 50, -1)
        discs.append(d)
    with pytest.raises(InspectorError, match="needs an elongated part"):
        golden_pose(GoldenSet([f"d{i}.png" for i in range(6)], discs, [], "sha"), spec, (256, 256))
    # a part the threshold does not find reliably (here 3 of 8 frames show a disc): refused, not a line
    # where a third of the frames would be error rows
    mixed = images[:5] + discs[:3]
    with pytest.raises(InspectorError, match="failed on 3 of 8.*not elongated"):
        golden_pose(GoldenSet([f"m{i}.png" for i in range(8)], mixed, [], "sha"), spec, (256, 256))


@pytest.fixture(scope="module")
def pose_pipeline(tmp_path_factory):
    """Calibrated on 12 screws at random angles and places with motion pose; its pipeline."""
    from calibration.calibrate import calibrate
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline
    from inspector.settings import Settings
    from tests.conftest import small_settings, write_png

    rng = np.random.default_rng(5)
    golden = tmp_path_factory.mktemp("screws")
    for i in range(12):
        img = screw(float(rng.uniform(0, 360)), *rng.uniform(54, 74, 2), seed=i)
        write_png(golden / f"s{i:02d}.png", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    settings = small_settings(preprocess={"size": [SIDE, SIDE], "align": {"enabled": True, "motion": "pose"}},
                              calibration={"holdout": 0.5, "min_images": 4})
    out = golden.parent / "bundle_pose"
    calibrate(settings, golden, out, progress=False)
    bundle = load_bundle(out)
    pipeline = build_pipeline(bundle, Settings().engine)
    yield bundle, pipeline
    pipeline.engine.close()


def _inspect(pipeline, u8: np.ndarray):
    from datetime import datetime, timezone

    from inspector.types import Frame

    frame = Frame(id="f", source="test", captured_at=datetime.now(timezone.utc),
                  image=cv2.cvtColor(u8, cv2.COLOR_GRAY2BGR))
    return pipeline.inspect([frame])[0]


def test_pose_bundle_passes_a_new_turn_and_finds_a_defect_where_it_is_in_the_frame(pose_pipeline):
    bundle, pipeline = pose_pipeline
    pre = bundle.preprocess
    assert pre.canvas == (SIDE, SIDE) and pre.work_size[0] > pre.work_size[1]  # the screw's box, not the frame
    good = _inspect(pipeline, screw(77.0, 62, 66, seed=40))
    assert good.kind.value == "pass", (good.score, good.error)
    for angle, cx, cy in [(77.0, 62, 66), (250.0, 68, 60)]:
        v = _inspect(pipeline, screw(angle, cx, cy, burr=True, seed=41))
        assert v.kind.value == "fail", (v.score, v.threshold, good.score)
        assert v.pixel_map.shape == (SIDE, SIDE) and v.transform.align is not None
        y, x = np.unravel_index(np.argmax(v.pixel_map), v.pixel_map.shape)
        c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
        ex, ey = cx + 15 * c + 8 * s, cy - 15 * s + 8 * c  # the burr's centre, turned as the screw
        assert math.hypot(x - ex, y - ey) < 16.0, ((x, y), (ex, ey))  # two feature cells (8 px each)
        r = v.regions[0]
        assert r.x <= ex <= r.x + r.w and r.y <= ey <= r.y + r.h  # the region is on the burr too
        far = math.hypot(x - (2 * cx - ex), y - (2 * cy - ey))  # the same spot were the screw turned 180°
        assert far > 20.0
    blank = _inspect(pipeline, np.full((SIDE, SIDE), 200, np.uint8))
    assert blank.kind.value == "error" and "no part found" in blank.error


def test_a_part_longer_than_the_golden_box_is_refused_not_cut_to_fit():
    # the box holds the longest golden part: a longer part's ends would be cut off, and a defect
    # there (or the wrong length itself) never seen
    normal = screw(30, 64, 64)
    long = cv2.resize(screw(0, 64, 64), None, fx=1.25, fy=1.0, interpolation=cv2.INTER_LINEAR)
    off = (long.shape[1] - SIDE) // 2
    long = long[:, off:off + SIDE]
    aligner = PoseAligner(None, 0.6, (72, 32))
    aligner.estimate(grey(normal))  # the golden length fits
    with pytest.raises(FrameError, match="longer than any golden part"):
        aligner.estimate(grey(long))
