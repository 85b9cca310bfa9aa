"""Alignment to the golden reference (preprocess.align): ECC registration, its limits, maps warped
back into the frame's own pixels, and what it buys end to end on misplaced parts."""
from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
from datetime import datetime, timezone

import cv2
import numpy as np
import pytest

from inspector.align import Aligner, AlignSpec, build_reference, to_grey, unalign_map
from inspector.decode import FrameError
from tests.conftest import TEST_SIZE, aligned_settings, moved, small_settings


@pytest.fixture(scope="module")
def parts():
    from calibration.synthetic import make_part

    rng = np.random.default_rng(21)
    return [make_part(rng, size=TEST_SIZE) for _ in range(8)]


@pytest.fixture(scope="module")
def built_reference(parts):
    """build_reference of the parts with the default AlignSpec: (reference, [(index, reason) not registered])."""
    return build_reference([to_grey(p) for p in parts], AlignSpec())


def test_ecc_recovers_a_known_shift_and_turn(parts, built_reference):
    reference, failed = built_reference
    assert failed == []
    aligner = Aligner(reference, AlignSpec())
    own = aligner.estimate(to_grey(parts[3]))  # each synthetic part has its own small jitter
    frame, m = moved(parts[3], 6, -4, 4.0)
    warp = aligner.estimate(to_grey(frame))
    # the warp maps reference pixels to frame pixels, so it must be m after the part's own pose
    # (to within a pixel and half a degree); cv2's positive angle turns counter-clockwise on screen
    def angle(w):
        return math.degrees(math.atan2(w[1, 0], w[0, 0]))

    assert abs(angle(warp) - angle(own) - (-4.0)) < 0.5
    centre = np.array([TEST_SIZE / 2, TEST_SIZE / 2, 1.0])
    np.testing.assert_allclose(warp @ centre, m @ np.append(own @ centre, 1.0), atol=1.0)
    before = np.abs(to_grey(frame) - reference).mean()
    after = np.abs(to_grey(Aligner.warp_image(frame, warp)) - reference).mean()
    assert after < 0.5 * before


def test_unrecognisable_frame_is_an_error_naming_alignment(built_reference):
    reference, _ = built_reference
    noise = np.random.default_rng(0).integers(0, 256, (TEST_SIZE, TEST_SIZE), dtype=np.uint8)
    with pytest.raises(FrameError, match="^alignment: "):
        Aligner(reference, AlignSpec()).estimate(to_grey(noise))


def test_shift_beyond_the_limit_is_refused(parts, built_reference):
    reference, _ = built_reference
    frame, _ = moved(parts[0], 10, 0, 0.0)
    Aligner(reference, AlignSpec()).estimate(to_grey(frame))  # within the default 15%
    with pytest.raises(FrameError, match="out of place.*max_shift"):
        Aligner(reference, AlignSpec(max_shift=0.03)).estimate(to_grey(frame))


def test_unalign_map_puts_a_spot_back_where_the_frame_has_it():
    m = cv2.getRotationMatrix2D((64, 64), 10.0, 1.0)
    m[:, 2] += (7, -5)  # reference pose -> frame pose
    spot = np.zeros((128, 128), np.float32)
    spot[40, 90] = 1.0
    spot = cv2.GaussianBlur(spot, (0, 0), 2)
    back = unalign_map(spot, m.ravel())
    y, x = np.unravel_index(np.argmax(back), back.shape)
    np.testing.assert_allclose([x, y], m @ [90, 40, 1], atol=1.0)


def _inspect(pipeline, image):
    from inspector.types import Frame

    return pipeline.inspect([Frame(id="t", source="t", captured_at=datetime.now(timezone.utc), image=image)])[0]


@pytest.fixture(scope="module")
def aligned_and_plain(aligned_bundle_dir, bundle_dir):
    """{align on?: (bundle dir, pipeline)}: the same golden parts calibrated with and without it."""
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline
    from inspector.settings import Settings

    out = {align: (d, build_pipeline(load_bundle(d), Settings().engine))
           for align, d in ((True, aligned_bundle_dir), (False, bundle_dir))}
    yield out
    for _, p in out.values():
        p.engine.close()


def test_misplaced_good_part_passes_only_with_alignment(aligned_and_plain, part_images):
    good, _ = moved(part_images(), 5, -4, 3.0)
    aligned, plain = aligned_and_plain[True][1], aligned_and_plain[False][1]
    assert _inspect(plain, good).kind.value == "fail"  # the pose alone looks like a defect
    v = _inspect(aligned, good)
    assert v.kind.value == "pass", v.score


def test_misplaced_defect_is_found_where_it_is_in_the_frame(aligned_and_plain, part_images):
    pipeline = aligned_and_plain[True][1]
    defect = part_images("missing_hole")
    in_place = _inspect(pipeline, defect)
    frame, m = moved(defect, 9, -7, 3.0)
    v = _inspect(pipeline, frame)
    assert in_place.kind.value == "fail" and v.kind.value == "fail"
    # the hottest point of the map, in the frame's own pixels, moved with the part
    y0, x0 = np.unravel_index(np.argmax(in_place.pixel_map), in_place.pixel_map.shape)
    y1, x1 = np.unravel_index(np.argmax(v.pixel_map), v.pixel_map.shape)
    np.testing.assert_allclose([x1, y1], m @ [x0, y0, 1.0], atol=3.0)
    r1 = v.regions[0]
    assert r1.x <= x1 <= r1.x + r1.w and r1.y <= y1 <= r1.y + r1.h  # the region is there too
    assert v.transform.align is not None and v.pixel_map.shape == (TEST_SIZE, TEST_SIZE)


def test_bundle_keeps_the_reference_and_the_config_must_agree(aligned_and_plain):
    from inspector.bundle import ALIGN_REFERENCE, load_bundle
    from inspector.errors import BundleError
    from inspector.runtime import check_preprocess_matches

    path = aligned_and_plain[True][0]
    bundle = load_bundle(path)
    assert bundle.arrays[ALIGN_REFERENCE].shape == (TEST_SIZE, TEST_SIZE)
    assert json.loads((path / "manifest.json").read_text())["preprocess"]["align"]["motion"] == "euclidean"
    plain_config = small_settings(preprocess={"size": [TEST_SIZE, TEST_SIZE]})
    with pytest.raises(BundleError, match="preprocess.align motion euclidean.*the config says off"):
        check_preprocess_matches(bundle, plain_config)
    check_preprocess_matches(bundle, aligned_settings())


def test_bundle_without_its_reference_is_refused(aligned_and_plain, tmp_path):
    from inspector.bundle import ALIGN_REFERENCE, ARRAYS, load_bundle
    from inspector.errors import BundleError

    copy = tmp_path / "b"
    shutil.copytree(aligned_and_plain[True][0], copy)
    with np.load(copy / ARRAYS, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != ALIGN_REFERENCE}
    np.savez(copy / ARRAYS, **arrays)
    with pytest.raises(BundleError, match="align_reference"):
        load_bundle(copy, verify_hashes=False)


def test_calibration_summary_and_report_of_an_aligned_bundle(tmp_path, aligned_calibration):
    from calibration.summary import print_summary, write_report

    # write_report writes into the bundle's folder: the shared session bundle stays as it is
    shutil.copytree(aligned_calibration.bundle_dir, tmp_path / "b")
    result = dataclasses.replace(aligned_calibration, bundle_dir=tmp_path / "b")
    report = write_report(result, aligned_settings(), None)  # near-threshold heatmaps need the bundle's reference
    assert report.is_file() and list((tmp_path / "b" / "report").glob("near-*.png"))
    out = io.StringIO()
    print_summary(result, report, out=out)
    engine_line = next(line for line in out.getvalue().splitlines() if line.startswith("engine"))
    assert "aligned to the golden reference (euclidean)" in engine_line
    assert result.manifest.engine.calibrated_precision in engine_line


def test_a_part_turned_in_place_counts_as_turned_not_asmoved(parts, built_reference):
    reference, _ = built_reference
    turned, _ = moved(parts[2], 0, 0, 12.0)  # within max_rotation_deg 15, no shift at all
    warp = Aligner(reference, AlignSpec()).estimate(to_grey(turned))
    assert abs(math.degrees(math.atan2(warp[1, 0], warp[0, 0]))) > 10
    with pytest.raises(FrameError, match="turned .* degrees"):
        Aligner(reference, AlignSpec(max_rotation_deg=5)).estimate(to_grey(turned))


def test_golden_images_that_do_not_register_leave_with_their_copies(parts):
    from calibration.golden import GoldenSet
    from calibration.reference import golden_reference
    from inspector.preprocess import PreprocessSpec

    noise = np.random.default_rng(1).integers(0, 256, (TEST_SIZE, TEST_SIZE, 3), dtype=np.uint8)
    blank = np.full((TEST_SIZE, TEST_SIZE, 3), 128, np.uint8)
    names = ["blank.png", *[f"g{i}.png" for i in range(len(parts))], "noise.png", "noise.png#aug1", "noise.png#aug2"]
    images = [blank, *parts, noise, noise.copy(), noise.copy()]
    golden = GoldenSet(names, images, [], "sha")
    spec = PreprocessSpec(TEST_SIZE, TEST_SIZE, None, AlignSpec())
    kept, reference = golden_reference(golden, spec)
    assert kept.names == [f"g{i}.png" for i in range(len(parts))]  # the blank first image did not derail it
    assert sorted(n for n, _ in kept.skipped) == ["blank.png", "noise.png"]
    assert all("alignment" in reason for _, reason in kept.skipped)
    assert reference.shape == (TEST_SIZE, TEST_SIZE)


def test_calibration_refuses_golden_images_that_do_not_register_to_each_other(tmp_path):
    from calibration.calibrate import calibrate
    from inspector.errors import InspectorError
    from tests.conftest import write_png

    rng = np.random.default_rng(2)
    for i in range(6):  # six unrelated "parts": at most the one picked as reference registers
        write_png(tmp_path / f"n{i}.png", rng.integers(0, 256, (TEST_SIZE, TEST_SIZE, 3), dtype=np.uint8))
    settings = aligned_settings()
    with pytest.raises(InspectorError, match="images register to the golden reference .need 4.*align off"):
        calibrate(settings, tmp_path, tmp_path / "b", progress=False)


def test_flat_golden_images_give_one_clear_error():
    from calibration.golden import GoldenSet
    from calibration.reference import golden_reference
    from inspector.errors import InspectorError
    from inspector.preprocess import PreprocessSpec

    blank = [np.full((TEST_SIZE, TEST_SIZE, 3), v, np.uint8) for v in (100, 110, 120)]
    golden = GoldenSet(["a.png", "b.png", "c.png"], blank, [], "sha")
    with pytest.raises(InspectorError, match="^golden images: alignment: no golden image registers"):
        golden_reference(golden, PreprocessSpec(TEST_SIZE, TEST_SIZE, None, AlignSpec()))
