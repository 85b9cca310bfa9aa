"""One-class SVM (hypersphere / ocsvm): numpy scoring == scikit-learn, image level only,
planted outlier flagged, batch == one-by-one, determinism, bundle round trip."""
import numpy as np

from calibration.methods.ocsvm import fit_svm
from inspector.methods import ocsvm
from inspector.methods.ocsvm import pool_features, rbf_decision
from tests.conftest import FP32_ENGINE, TEST_SIZE, small_settings
from tests.unit._scorer_data import data, features, fitted

OCSVM = {"type": "hypersphere", "method": "ocsvm"}


def _config(**section):
    return small_settings(scorer={**OCSVM, "ocsvm": section}).scorer


def test_numpy_decision_function_equals_sklearn_on_random_data():
    from sklearn.svm import OneClassSVM

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 12))
    q = rng.normal(size=(25, 12)) * 1.5
    for gamma in (0.05, 0.3):
        svm = OneClassSVM(kernel="rbf", nu=0.2, gamma=gamma).fit(x)
        mine = rbf_decision(q, svm.support_vectors_, svm.dual_coef_[0], svm.intercept_[0], gamma)
        np.testing.assert_allclose(mine, svm.decision_function(q), rtol=1e-9, atol=1e-9)


def test_stored_arrays_score_like_the_fitted_sklearn_model():
    for pooling in ("avg", "avg_max"):
        config = _config(pooling=pooling)
        golden, test = data()[0], data()[1]
        svm, mean, std = fit_svm(golden, config)
        scorer = fitted(config, golden)
        want = svm.decision_function((pool_features(test, pooling) - mean) / std)
        np.testing.assert_allclose(ocsvm.decision(scorer.state, test), want, rtol=1e-9, atol=1e-9)
        sm = scorer.score({"features": test}, (TEST_SIZE, TEST_SIZE))
        assert sm.pixel_maps is None and sm.image_scores.dtype == np.float32
        np.testing.assert_allclose(sm.image_scores, -want, rtol=1e-5, atol=1e-6)


def test_planted_outlier_scores_above_every_good_part():
    golden, test, images, _ = data()
    scorer = fitted(_config(), golden)
    # image level: a large foreign patch, and an inverted part, shift the pooled features
    odd = images[1].copy()
    odd[30:100, 20:110] = 230
    outliers = features([odd, 255 - images[2]])
    s_good = scorer.score({"features": test[:6]}, (TEST_SIZE, TEST_SIZE)).image_scores
    s_bad = scorer.score({"features": outliers}, (TEST_SIZE, TEST_SIZE)).image_scores
    assert s_bad.min() > s_good.max()


def test_batch_scores_equal_one_by_one_and_fit_is_deterministic():
    golden, test = data()[0], data()[1]
    scorer = fitted(_config(), golden)
    a, b = scorer.state.arrays(), fitted(_config(), golden).state.arrays()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    whole = scorer.score({"features": test}, (TEST_SIZE, TEST_SIZE)).image_scores
    one = [scorer.score({"features": test[i:i + 1]}, (TEST_SIZE, TEST_SIZE)).image_scores[0] for i in range(len(test))]
    np.testing.assert_allclose(one, whole, rtol=1e-6, atol=1e-7)


def test_bundle_round_trip_scores_equal_the_in_memory_fitter(tmp_path, golden_dir):
    from calibration.calibrate import calibrate
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline
    from tests.unit._scorer_data import preprocess

    settings = small_settings(scorer=OCSVM, engine=FP32_ENGINE)  # compared with fp32 in-memory features
    result = calibrate(settings, golden_dir, tmp_path / "b", progress=False)
    assert result.pixel_threshold is None and result.holdout_maps is None
    bundle = load_bundle(tmp_path / "b")
    assert bundle.pixel_threshold is None
    golden, test, images, _ = data()  # golden_dir holds data()'s golden parts
    mine = fitted(settings.scorer, golden)
    pipe = build_pipeline(bundle, settings.engine)
    got = pipe.scorer.score(pipe.engine.run(preprocess(images)), (TEST_SIZE, TEST_SIZE)).image_scores
    want = mine.score({"features": test}, (TEST_SIZE, TEST_SIZE))
    np.testing.assert_allclose(got, want.image_scores, rtol=1e-3, atol=1e-3)
