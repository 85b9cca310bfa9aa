"""PaDiM (memory_bank / padim): planted outlier flagged at its place, batch == one-by-one,
seeded channel subset, bundle round trip through the engine."""
import numpy as np
import pytest

from inspector.methods import padim
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings
from tests.unit._scorer_data import data, fitted, peak_is_at_defect

PADIM = {"type": "memory_bank", "method": "padim", "padim": {"n_channels": 64}}


def _fit(seed=0, **padim):
    s = small_settings(scorer={**PADIM, "padim": {"n_channels": 64, **padim}})
    return fitted(s.scorer, data()[0], seed)


def test_planted_defect_scores_above_every_good_part_and_points_at_it():
    _, test, _, labels = data()
    sm = _fit().score({"features": test}, (TEST_SIZE, TEST_SIZE))
    assert sm.image_scores[labels == 1].min() > sm.image_scores[labels == 0].max()
    assert peak_is_at_defect(sm.pixel_maps[-1])


def test_arrays_shapes_and_dtypes():
    state = _fit().state
    params, arrays = state.params, state.arrays()
    assert arrays["padim_mean"].shape == (256, 64) and arrays["padim_mean"].dtype == np.float32
    assert arrays["padim_inv_cov"].shape == (256, 64, 64) and arrays["padim_inv_cov"].dtype == np.float32
    assert params.grid_hw == [16, 16] and len(np.unique(arrays["padim_channels"])) == 64


def test_mahalanobis_matches_a_direct_computation():
    state = _fit().state
    arrays = state.arrays()
    test = data()[1][:2]
    maps = padim.patch_scores(state, test)
    k, (y, x) = 37, divmod(37, 16)
    for i in range(2):
        v = test[i, arrays["padim_channels"], y, x] - arrays["padim_mean"][k]
        want = np.sqrt(v @ arrays["padim_inv_cov"][k].astype(np.float64) @ v)
        np.testing.assert_allclose(maps[i, y, x], want, rtol=1e-4)


def test_batch_scores_equal_one_by_one():
    scorer = _fit()
    test = data()[1]
    whole = scorer.score({"features": test}, (TEST_SIZE, TEST_SIZE))
    for i in range(len(test)):
        one = scorer.score({"features": test[i:i + 1]}, (TEST_SIZE, TEST_SIZE))
        np.testing.assert_allclose(one.image_scores[0], whole.image_scores[i], rtol=1e-5)
        np.testing.assert_allclose(one.pixel_maps[0], whole.pixel_maps[i], rtol=1e-4, atol=1e-5)


def test_seeded_fit_is_deterministic_and_the_seed_picks_the_channels():
    a, b, c = (_fit(seed=s).state.arrays() for s in (0, 0, 1))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["padim_channels"], c["padim_channels"])


def test_a_different_grid_is_refused_with_a_readable_error():
    scorer = _fit()
    with pytest.raises(ValueError, match="patch grid"):
        scorer.score({"features": np.zeros((1, 152, 8, 8), np.float32)}, (64, 64))


def test_bundle_round_trip_scores_equal_the_in_memory_fitter(tmp_path, golden_dir):
    from calibration.calibrate import calibrate
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline
    from tests.unit._scorer_data import preprocess

    settings = small_settings(scorer=PADIM, engine=FP32_ENGINE)  # compared with fp32 in-memory features
    calibrate(settings, golden_dir, tmp_path / "b", progress=False)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.scorer_type == "memory_bank" and bundle.scorer_params["method"] == "padim"
    golden, test, images, _ = data()  # golden_dir holds data()'s golden parts
    mine = fitted(settings.scorer, golden)
    arrays = mine.state.arrays()
    for k in arrays:
        np.testing.assert_allclose(bundle.arrays[k], arrays[k], rtol=2e-3, atol=2e-3)
    pipe = build_pipeline(bundle, settings.engine)
    got = pipe.scorer.score(pipe.engine.run(preprocess(images)), (TEST_SIZE, TEST_SIZE)).image_scores
    want = mine.score({"features": test}, (TEST_SIZE, TEST_SIZE))
    np.testing.assert_allclose(got, want.image_scores, rtol=2e-3)
