"""The pixel map refined by its frame (inspector/guided.py, global_context's ``map_guide_cells``): a
map that leaks a cell past a square's edges, as the 3x3-aggregated features make it, is pulled
back inside the square; without a guide (or with the option off) the map is the old one."""
import numpy as np
import pytest

from calibration.evaluation import auroc
from inspector.guided import grey_guide, guided_filter, refine_map
from inspector.methods.base import score_patch_maps, upsample_and_smooth

SIZE, STRIDE = 128, 8
LO, HI = 40, 88  # the square, in pixels (not on the cell grid: an edge inside cells 5 and 10)


def _frame_and_map():
    rng = np.random.default_rng(0)
    grey = np.full((SIZE, SIZE), 0.25, np.float32)
    grey[LO:HI, LO:HI] = 0.7
    grey += rng.normal(0, 0.01, grey.shape).astype(np.float32)  # sensor noise
    rgb = np.repeat(grey[None], 3, axis=0)  # as the preprocessor hands it: CHW RGB in [0, 1]
    cells = np.zeros((SIZE // STRIDE, SIZE // STRIDE), np.float32)
    # every cell whose 3x3 neighbourhood touches the square: the spread past the edge
    c0, c1 = LO // STRIDE - 1, (HI - 1) // STRIDE + 2
    cells[c0:c1, c0:c1] = 10.0
    cells += 1.0
    return rgb, grey, cells


def _inside_outside():
    inside = np.zeros((SIZE, SIZE), bool)
    inside[LO:HI, LO:HI] = True
    return inside


def test_the_refined_map_stays_inside_the_square_the_plain_one_leaks_past():
    rgb, _, cells = _frame_and_map()
    sm = score_patch_maps(cells[None], (SIZE, SIZE), 4.0, guide_cells=3)
    assert sm.guide_radius == 3 * STRIDE
    plain, refined = sm.pixel_map(0), sm.pixel_map(0, rgb)
    inside = _inside_outside()
    half = lambda m: (m[inside].mean() + np.median(m[~inside])) / 2  # halfway from the background to the defect
    leaked = lambda m: (m > half(m))[~inside].sum() / inside.sum()  # outside pixels above it, per square pixel
    assert leaked(plain) > 0.3  # the spread the refinement is for: ~8 px all round
    assert leaked(refined) < 0.02
    labels = inside.ravel().astype(int)
    assert auroc(labels, refined.ravel()) >= auroc(labels, plain.ravel())
    # the map's units are kept: its level inside is the cells' level there, not a rescaled one
    assert refined[inside].mean() == pytest.approx(plain[inside].mean(), rel=0.05)


def test_without_a_guide_or_with_the_option_off_the_map_is_the_old_one():
    rgb, _, cells = _frame_and_map()
    old = upsample_and_smooth(cells[None], (SIZE, SIZE), 4.0)[0]
    on = score_patch_maps(cells[None], (SIZE, SIZE), 4.0, guide_cells=3)
    off = score_patch_maps(cells[None], (SIZE, SIZE), 4.0)
    np.testing.assert_array_equal(on.pixel_map(0), old)  # no guide handed in
    np.testing.assert_array_equal(off.pixel_map(0, rgb), old)  # guide_cells 0
    np.testing.assert_array_equal(off.guided_pixel_maps([rgb]), old[None])
    np.testing.assert_allclose(on.guided_pixel_maps([rgb])[0], on.pixel_map(0, rgb))


def test_a_flat_frame_only_averages_and_a_constant_map_is_kept():
    _, grey, cells = _frame_and_map()
    flat = np.full_like(grey, 0.5)
    m = upsample_and_smooth(cells[None], (SIZE, SIZE), 4.0)[0]
    # no edge in the guide: the window's mean, a box blur of radius 8
    box = guided_filter(flat, m, 8, 1e-3)
    assert np.abs(box - m).max() > 0.1 and box.min() >= m.min() - 1e-4 and box.max() <= m.max() + 1e-4
    np.testing.assert_allclose(guided_filter(grey, np.full_like(grey, 3.0), 8, 1e-3), 3.0, atol=1e-4)
    assert grey_guide(np.stack([grey] * 3)).shape == grey.shape
    with pytest.raises(ValueError, match="differ in size"):
        guided_filter(grey, m[:-1], 8, 1e-3)


def test_global_context_refines_by_default_and_its_old_bundles_do_not():
    from tests.conftest import TEST_SIZE, small_settings
    from tests.unit._scorer_data import data, fit_params_arrays, scorer_of

    gc = {"type": "memory_bank", "method": "global_context", "coreset": {"ratio": 0.05}}
    golden, test = data()[:2]
    params, arrays = fit_params_arrays(small_settings(scorer=gc).scorer, golden)
    assert params["map_guide_cells"] == 3 and params["map_guide_eps"] == pytest.approx(1e-3)
    hw = (TEST_SIZE, TEST_SIZE)
    on = scorer_of(params, arrays).score({"features": test}, hw)
    assert on.guide_radius == 3 * (TEST_SIZE // test.shape[2])
    old = {k: v for k, v in params.items() if not k.startswith("map_guide")}  # a bundle from before the option
    off = scorer_of(old, arrays).score({"features": test}, hw)
    assert off.guide_radius == 0
    np.testing.assert_array_equal(on.image_scores, off.image_scores)  # the map only
    off_config = small_settings(scorer={**gc, "global_context": {"map_guide_cells": 0}}).scorer
    params0, _ = fit_params_arrays(off_config, golden)
    assert params0["map_guide_cells"] == 0


def test_a_glint_does_not_rise_above_the_maps_own_peak():
    # a bright speck inside a window where the map rises with brightness: the plain guided
    # filter extrapolates its linear fit there, the refinement keeps the window's range
    _, grey, cells = _frame_and_map()
    grey = grey.copy()
    grey[60:62, 60:62] = 1.0  # a glint in the bright square
    m = upsample_and_smooth(cells[None], (SIZE, SIZE), 4.0)[0]
    raw = guided_filter(grey, m, 24, 1e-3, 4)
    kept = refine_map(grey, m, 24, 1e-3, 4)
    assert raw.max() > m.max() + 1.0
    assert kept.max() <= m.max() + 1e-3 and kept.min() >= m.min() - 1e-3
    inside = _inside_outside()
    assert (kept > (kept[inside].mean() + np.median(kept[~inside])) / 2)[~inside].mean() < 0.01  # still sharp
