"""The synthetic-defect generator: seeded, its mask says where it changed the image, sized as asked,
visible, on the part, for grey and colour images of any size."""
from __future__ import annotations

import numpy as np
import pytest

from calibration.synthetic import make_part
from calibration.synthetic_defects import KINDS, DefectSynthesizer, foreground_mask, perlin_noise


@pytest.fixture(scope="module")
def parts():
    rng = np.random.default_rng(5)
    return [make_part(rng, size=128) for _ in range(4)]


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return d if d.ndim == 2 else d.max(axis=2)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_defect_other_seed_other_defect(parts, kind):
    a = DefectSynthesizer(parts, seed=3).make(1, kind, 12)
    b = DefectSynthesizer(parts, seed=3).make(1, kind, 12)
    c = DefectSynthesizer(parts, seed=4).make(1, kind, 12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [6, 12, 24])
def test_changes_inside_the_mask_only_and_visible(parts, kind, size):
    synth = DefectSynthesizer(parts, seed=0)
    for i in range(len(parts)):
        d = synth.make(i, kind, size)
        assert d.image.shape == parts[i].shape and d.image.dtype == np.uint8
        assert d.mask.shape == parts[i].shape[:2] and d.mask.dtype == bool
        diff = _changed(d.image, parts[i])
        assert (diff[~d.mask] == 0).all(), "pixels outside the mask changed"
        assert diff[d.mask].mean() >= synth.min_contrast
        assert d.contrast == pytest.approx(diff[d.mask].astype(np.float64).mean())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", [8, 16, 32])
def test_mask_area_is_about_size_squared(parts, kind, size):
    synth = DefectSynthesizer(parts, seed=1)
    areas = [synth.make(i, kind, size).mask.sum() for i in range(len(parts))]
    ratio = np.median(areas) / size ** 2
    assert 0.2 <= ratio <= 2.5, (kind, size, areas)


def test_defects_land_on_the_part_not_the_belt(parts):
    """The demo parts are a bright plate on a dark belt: the defects' centres are on the plate."""
    synth = DefectSynthesizer(parts, seed=2)
    on_part = []
    for i in range(len(parts)):
        plate = foreground_mask(parts[i])
        for kind in KINDS:
            d = synth.make(i, kind, 10)
            ys, xs = np.nonzero(d.mask)
            on_part.append(plate[int(np.median(ys)), int(np.median(xs))])
    assert np.mean(on_part) >= 0.9


def test_foreground_of_a_plate_on_a_belt_and_of_a_texture(parts):
    plate = foreground_mask(parts[0])
    assert 0.25 < plate.mean() < 0.75  # the plate covers about 150x110 of 256x256
    assert not plate[:5].any() and not plate[:, :5].any()  # the belt along the border is background
    rng = np.random.default_rng(0)
    texture = (128 + 40 * rng.standard_normal((96, 96))).clip(0, 255).astype(np.uint8)
    assert foreground_mask(texture).all()  # no uniform background: the whole image is the part


def test_grey_colour_small_and_non_square_images():
    rng = np.random.default_rng(7)
    grey = [make_part(rng, size=96, grey=True)[10:70, :] for _ in range(3)]  # 60x96
    colour = [make_part(rng, size=64) for _ in range(2)]
    tiny_texture = [(rng.random((40, 33)) * 255).astype(np.uint8) for _ in range(2)]
    for images in (grey, colour, tiny_texture):
        synth = DefectSynthesizer(images, seed=0)
        for kind in KINDS:
            d = synth.make(0, kind, 8)
            assert d.image.shape == images[0].shape
            assert d.mask.any()
            assert (_changed(d.image, images[0])[~d.mask] == 0).all()


def test_donors_of_another_size_or_colour_are_used_for_pastes():
    rng = np.random.default_rng(8)
    a = make_part(rng, size=80)
    b = make_part(rng, size=120, grey=True)
    synth = DefectSynthesizer([a, b], seed=0)
    for kind in ("foreign", "texture"):
        for i in (0, 1):
            d = synth.make(i, kind, 10)
            assert d.image.shape == (a if i == 0 else b).shape


def test_size_too_large_for_the_image_is_refused():
    img = np.full((32, 32), 100, np.uint8)
    with pytest.raises(ValueError, match="size"):
        DefectSynthesizer([img], seed=0).make(0, "spot", 40)


def test_perlin_noise_is_smooth_and_seeded():
    n1 = perlin_noise((64, 48), 4, np.random.default_rng(0))
    n2 = perlin_noise((64, 48), 4, np.random.default_rng(0))
    assert n1.shape == (64, 48) and np.array_equal(n1, n2)
    assert n1.std() > 0.05
    # smooth: neighbouring values differ far less than the field's range
    assert np.abs(np.diff(n1, axis=0)).mean() < 0.1 * (n1.max() - n1.min())


def test_defects_stay_inside_the_roi(parts):
    """preprocess.roi (x, y, w, h): only that part of the frame is inspected, so defects go there."""
    synth = DefectSynthesizer(parts, seed=0, roi=(64, 10, 60, 110))
    for kind in KINDS:
        for i in range(len(parts)):
            d = synth.make(i, kind, 8)
            ys, xs = np.nonzero(d.mask)
            assert xs.min() >= 64 - 4 * 8 and 64 <= np.median(xs) < 124 and 10 <= np.median(ys) < 120
    with pytest.raises(ValueError, match="ROI"):
        synth.make(0, "spot", 40)  # more than half the 60 px wide ROI


def test_a_scratch_drawn_off_the_image_changes_nothing_and_warns_nothing():
    # a long bent scratch around a part near the frame's edge can miss the image; make() draws
    # again, and the grey-level shift of the empty stroke must neither warn nor change pixels
    import warnings

    from calibration.synthetic_defects import _shifted

    region = np.zeros((0, 0, 3), np.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _shifted(region, np.zeros((0, 0), bool), np.random.default_rng(0), 50, 110)
        assert out.shape == region.shape
        grey = np.full((4, 5), 7, np.uint8)
        assert np.array_equal(_shifted(grey, np.zeros((4, 5), bool), np.random.default_rng(0), 50, 110), grey)
