"""Few golden samples: augmented copies are bounded jitter, deterministic per seed, and never
leak a held-out image into the fit."""
import argparse

import numpy as np
import pytest

from calibration.augment import augment_golden, is_augmented, jitter, origin_ids, original_name
from calibration.golden_split import split_originals
from calibration.methods.split import split_rows
from calibration.golden import GoldenSet
from inspector.settings import AugmentConfig


def _golden(n=6, grey=False):
    from calibration.synthetic import make_part

    rng = np.random.default_rng(0)
    ims = [make_part(rng, size=96, grey=grey) for _ in range(n)]
    return GoldenSet([f"p{i}.png" for i in range(n)], ims, [], "abc")


def test_copies_keep_shape_dtype_and_stay_close_to_the_original():
    g = _golden(grey=False)
    out = augment_golden(g, 3, seed=0)
    assert len(out.images) == 6 * 4 and out.names[:6] == g.names
    assert out.names[6] == "p0.png#aug00" and original_name(out.names[6]) == "p0.png" and is_augmented(out.names[6])
    for name, im in zip(out.names, out.images):
        ref = g.images[g.names.index(original_name(name))]
        assert im.shape == ref.shape and im.dtype == np.uint8
        if is_augmented(name):
            diff = np.abs(im.astype(np.int16) - ref).mean()
            assert 0 < diff < 40
    assert out.sha256 != g.sha256


def test_grey_images_and_zero_copies():
    g = _golden(grey=True)
    assert augment_golden(g, 0, seed=0) is g
    out = augment_golden(g, 2, seed=1)
    assert all(im.ndim == 2 for im in out.images)


def test_augmentation_is_deterministic_per_seed():
    g = _golden()
    a, b, c = augment_golden(g, 2, seed=4), augment_golden(g, 2, seed=4), augment_golden(g, 2, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
    assert not all(np.array_equal(x, y) for x, y in zip(a.images[6:], c.images[6:]))


def test_jitter_respects_the_configured_tolerance():
    im = np.zeros((64, 64), np.uint8)
    im[30:34, 30:34] = 255
    cfg = AugmentConfig(max_shift_px=3, max_rotation_deg=0, brightness=0, contrast=0, noise_sigma=0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = jitter(im, rng, cfg)
        ys, xs = np.nonzero(out > 128)
        assert abs(ys.mean() - 31.5) <= 3.5 and abs(xs.mean() - 31.5) <= 3.5
    still = jitter(im, rng, AugmentConfig(max_shift_px=0, max_rotation_deg=0, brightness=0, contrast=0,
                                          noise_sigma=0))
    assert np.array_equal(still, im)


def test_held_out_images_are_originals_and_their_copies_are_not_fitted():
    g = augment_golden(_golden(10), 3, seed=0)
    fit_idx, hold_idx = split_originals(g.names, 0.3, seed=0)
    held = {g.names[i] for i in hold_idx}
    assert held and not any(is_augmented(n) for n in held)
    fitted_origins = {original_name(g.names[i]) for i in fit_idx}
    assert not fitted_origins & held
    assert len(fit_idx) == (10 - len(held)) * 4
    # without copies, the split is the plain one
    plain = _golden(10)
    for a, b in zip(split_originals(plain.names, 0.3, 0), split_rows(10, 0.3, 0)):
        np.testing.assert_array_equal(a, b)


def test_calibrate_with_augment_holds_out_originals(tmp_path, golden_dir):
    from calibration.calibrate import calibrate
    from inspector.bundle import load_bundle
    from tests.conftest import small_settings

    settings = small_settings(scorer={"type": "memory_bank", "method": "padim", "padim": {"n_channels": 32}},
                              calibration={"holdout": 0.25, "min_images": 4})
    r = calibrate(settings, golden_dir, tmp_path / "b", progress=False, augment=2)
    assert r.images_used == 16 * 3 and len(r.holdout_names) == 4
    assert not any(is_augmented(n) for n in r.holdout_names)
    assert load_bundle(tmp_path / "b").manifest.golden.augmented_copies == 32


def test_calibrate_command_has_the_augment_flag():
    from inspector.commands.calibrate import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--golden", "g", "--out", "o", "--augment", "10"]).augment == 10
    assert p.parse_args(["--golden", "g", "--out", "o"]).augment is None


def test_augment_settings_validate():
    from pathlib import Path

    from inspector.errors import ConfigError
    from inspector.settings import settings_from_dict

    s = settings_from_dict({"calibration": {"augment": {"copies": 4, "max_shift_px": 2}}}, base_dir=Path("/"))
    assert s.calibration.augment.copies == 4
    with pytest.raises(ConfigError, match="calibration.augment.max_rotation_deg"):
        settings_from_dict({"calibration": {"augment": {"max_rotation_deg": -1}}}, base_dir=Path("/"))


def test_origin_ids_give_copies_their_originals_id():
    g = GoldenSet(["b.png", "a.png", "c.png"], [np.zeros((8, 8), np.uint8)] * 3)
    names = augment_golden(g, 2, seed=0).names
    ids = origin_ids(names)
    assert ids.dtype == np.int64 and list(ids[:3]) == [0, 1, 2]
    assert all(ids[i] == ids[names.index(original_name(n))] for i, n in enumerate(names))
