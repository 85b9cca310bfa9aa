"""Global context (memory_bank / global_context): shapes, batch == one-by-one, a bundle round trip
of its arrays, the Ledoit-Wolf estimate, and an arrangement change (every patch normal, the part
as a whole wrong) that PatchCore misses and global context catches, at the right place."""
import numpy as np
import pytest

from calibration.methods import NoProgress
from calibration.methods import global_context as gc_fit
from inspector.methods import global_context as gc
from inspector.methods.base import StateInvalid
from inspector.methods.registry import Scorer, config_for, method_of
from tests.conftest import TEST_SIZE, small_settings
from tests.unit._scorer_data import data, fit_params_arrays, fitted, peak_is_at_defect, scorer_of

GC = {"type": "memory_bank", "method": "global_context", "coreset": {"ratio": 0.05}}


def _settings(**global_context):
    return small_settings(scorer={**GC, "global_context": global_context} if global_context else GC)


def test_fit_and_score_shapes_on_real_features_and_the_planted_defect_is_found_where_it_is():
    golden, test, _, labels = data()
    scorer = fitted(_settings().scorer, golden)
    state = scorer.state
    d = golden.shape[1]
    assert state.region_mean.shape == (21, 2 * d) and state.region_precision.shape == (21, 2 * d, 2 * d)
    assert state.region_z.shape == (21, 2) and state.params.grid_hw == [16, 16]
    assert set(state.arrays()) == {"gc_memory_bank", "gc_region_mean", "gc_region_precision", "gc_region_z"}
    sm = scorer.score({"features": test}, (TEST_SIZE, TEST_SIZE))
    assert sm.image_scores.shape == (7,) and sm.image_scores.dtype == np.float32
    assert sm.patch_maps.shape == (7, 16, 16) and sm.pixel_maps.shape == (7, TEST_SIZE, TEST_SIZE)
    assert sm.image_scores[labels == 1].min() > sm.image_scores[labels == 0].max()
    assert peak_is_at_defect(sm.pixel_maps[-1])


def test_batch_scores_equal_one_by_one():
    scorer = fitted(_settings().scorer, data()[0])
    test = data()[1]
    whole = scorer.score({"features": test}, (TEST_SIZE, TEST_SIZE))
    for i in range(len(test)):
        one = scorer.score({"features": test[i:i + 1]}, (TEST_SIZE, TEST_SIZE))
        np.testing.assert_allclose(one.image_scores[0], whole.image_scores[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(one.patch_maps[0], whole.patch_maps[i], rtol=1e-4, atol=2e-4)  # GEMM rounding at small distances


def test_stored_params_and_arrays_score_the_same_and_bad_arrays_are_refused():
    config = _settings(grids=[1, 2], map_grids=[2], weight=0.5).scorer
    params, arrays = fit_params_arrays(config, data()[0])
    assert params["local"]["method"] == "patchcore" and params["grids"] == [1, 2]
    test = data()[1]
    a = fitted(config, data()[0]).score({"features": test}, (TEST_SIZE, TEST_SIZE))
    b = scorer_of(params, arrays).score({"features": test}, (TEST_SIZE, TEST_SIZE))
    np.testing.assert_array_equal(a.image_scores, b.image_scores)
    with pytest.raises(StateInvalid, match="gc_region_precision"):
        scorer_of(params, {k: v for k, v in arrays.items() if k != "gc_region_precision"})
    with pytest.raises(StateInvalid, match="memory_bank"):
        scorer_of(params, {k: v for k, v in arrays.items() if k != "gc_memory_bank"})
    with pytest.raises(StateInvalid, match="gc_region_z"):
        scorer_of(params, {**arrays, "gc_region_z": arrays["gc_region_z"][:2]})
    with pytest.raises(ValueError, match="recalibrate"):
        scorer_of(params, arrays).score({"features": test[:, :, :8, :8]}, (64, 64))


def test_ledoit_wolf_matches_the_published_estimate():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 12)) @ rng.normal(size=(12, 12))
    cov, s = gc_fit.ledoit_wolf(x)
    sklearn = pytest.importorskip("sklearn.covariance")
    want, want_s = sklearn.ledoit_wolf(x)
    np.testing.assert_allclose(cov, want, rtol=1e-10)
    assert s == pytest.approx(want_s)


def _arrangement(rng, n, swap=False):
    """[n, 8, 8, 8] features: the left half's patches near prototype a, the right half's near b;
    with ``swap`` the right half's are a's too (a label missing: every patch a normal one)."""
    a, b = np.eye(8)[0] * 3, np.eye(8)[1] * 3
    f = rng.normal(scale=0.3, size=(n, 8, 8, 8))
    f[:, :, :, :4] += a[None, :, None, None]
    f[:, :, :, 4:] += (a if swap else b)[None, :, None, None]
    return f.astype(np.float32)


def test_an_arrangement_change_is_missed_by_patchcore_and_caught_by_global_context():
    rng = np.random.default_rng(3)
    golden, good, wrong = _arrangement(rng, 40), _arrangement(rng, 12), _arrangement(rng, 1, swap=True)
    test = np.concatenate([good, wrong])
    # map_weight 0.5: the regions' unexplained z in the map (the default 0 keeps PatchCore's map)
    config = small_settings(scorer={**GC, "coreset": {"size": 400}, "global_context": {"map_weight": 0.5}}).scorer
    state = gc_fit.fit(golden, config, 0, NoProgress())
    pc = Scorer(method_of("patchcore"), state.local).score({"features": test}, (64, 64))
    sm = Scorer(method_of("global_context"), state).score({"features": test}, (64, 64))
    assert pc.image_scores[-1] < pc.image_scores[:-1].max()  # PatchCore: just another good part
    assert sm.image_scores[-1] > sm.image_scores[:-1].max() + 3.0  # by a margin of 3 golden sigmas
    # the map carries it: the wrong half above the right half, which it was not for PatchCore
    m = (sm.patch_maps[-1] - state.params.local_mean) / state.params.local_std  # in golden z-units
    assert m[:, 4:].mean() > m[:, :4].mean() + 3.0
    # with the default map_weight 0 the map is PatchCore's; the image score still catches the wrong part
    plain = gc_fit.fit(golden, small_settings(scorer={**GC, "coreset": {"size": 400}}).scorer, 0, NoProgress())
    sp = Scorer(method_of("global_context"), plain).score({"features": test}, (64, 64))
    assert sp.image_scores[-1] > sp.image_scores[:-1].max() + 3.0
    # ... in PatchCore's own distance units, so the heatmap and regions threshold it as PatchCore's
    np.testing.assert_array_equal(sp.patch_maps, pc.patch_maps)
    # good parts' z stay near the golden ones' (standardised with out-of-fold distances)
    assert np.abs(gc.region_z(state, good)).mean() < 2.0


def test_fewer_than_three_golden_images_are_refused_in_one_line():
    rng = np.random.default_rng(0)
    config = small_settings(scorer=GC).scorer
    with pytest.raises(ValueError, match="at least 3 golden images .*got 2.*scorer.method: patchcore"):
        gc_fit.fit(_arrangement(rng, 2), config, 0, NoProgress())
    state = gc_fit.fit(_arrangement(rng, 3), config, 0, NoProgress())
    z = gc.region_z(state, _arrangement(rng, 4))
    assert np.isfinite(z).all() and np.abs(z).max() < 1e3  # not the 1e6 of a one-image covariance


def test_config_switches_between_memory_bank_methods_keep_what_they_share():
    s = _settings(grids=[2], map_grids=[2])
    pc = config_for(s.scorer, "patchcore")
    assert pc.method == "patchcore" and pc.coreset.ratio == 0.05
    back = config_for(pc, "global_context")
    assert back.coreset.ratio == 0.05 and back.global_context.grids == [1, 2, 4]
    assert config_for(s.scorer, "padim").method == "padim"


def test_map_grids_must_be_among_the_grids():
    from inspector.errors import ConfigError

    with pytest.raises(ConfigError, match=r"map_grids \[4\] must be among grids \[1, 2\]"):
        _settings(grids=[1, 2])


def test_the_map_gets_the_region_z_its_patches_do_not_explain():
    local = np.full((1, 4, 4), -5.0, np.float32)
    local[0, 0, 0] = 6.0  # one anomalous patch in the top-left 2x2 region
    z = np.array([[9.0, 8.0, 8.0, -1.0]], np.float32)  # the 2x2 regions, row-major
    m = gc.region_map(z, local, [2], [2])
    assert m[0, 0, 0] == m[0, 1, 1] == pytest.approx(3.0)  # 9 - 6: the patch explains most of it
    assert m[0, 0, 3] == m[0, 3, 0] == pytest.approx(8.0)  # nothing local: the whole z
    assert m[0, 3, 3] == 0.0  # a normal region adds nothing


def test_a_bf16_engine_gets_the_local_branch_searched_as_patchcore_would_be():
    state = fitted(_settings().scorer, data()[0]).state
    bf16 = gc.for_engine(state, "bf16")
    assert bf16.local.searcher.name == "bf16" and bf16.params.local.search == "bf16"
    assert state.params.local.search == "fp32"  # the fitted state is left as it was
    test = data()[1]
    a = Scorer(method_of("global_context"), state).score({"features": test}, (TEST_SIZE, TEST_SIZE))
    b = Scorer(method_of("global_context"), bf16).score({"features": test}, (TEST_SIZE, TEST_SIZE))
    np.testing.assert_allclose(a.image_scores, b.image_scores, rtol=1e-3, atol=1e-3)


def _with_copies(originals: np.ndarray, copies: int, noise: float, seed: int = 0):
    """originals [G, ...] followed by ``copies`` noisy copies of each (as calibrate --augment orders
    them), and each row's group (its original's index)."""
    rng = np.random.default_rng(seed)
    extra = [originals + noise * rng.standard_normal(originals.shape) for _ in range(copies)]
    x = np.concatenate([originals, *[e.astype(originals.dtype) for e in extra]])
    return x, np.tile(np.arange(len(originals)), copies + 1)


def test_out_of_fold_distances_hold_an_images_copies_out_with_it():
    """With as many folds as originals, each original's region distance is the one under the
    Gaussian of the other originals and their copies (brute force); its near-identical copies in
    the fit would make it tiny, and the regions' z too small."""
    rng = np.random.default_rng(3)
    x, groups = _with_copies(rng.standard_normal((6, 2, 4)), copies=3, noise=1e-3)
    got = gc_fit.out_of_fold_distances(x, folds=6, seed=0, groups=groups)
    for g in range(6):
        mean, prec = gc_fit.gaussians(x[groups != g])
        np.testing.assert_allclose(got[groups == g], gc.mahalanobis(x[groups == g], mean, prec), rtol=1e-10)
    leaky = gc_fit.out_of_fold_distances(x, folds=6, seed=0)  # rows as independent images
    assert leaky[:6].mean() < 0.7 * got[:6].mean()
    # without copies, groups of one are exactly the rows
    np.testing.assert_array_equal(gc_fit.out_of_fold_distances(x[:6], 3, 0, np.arange(6)),
                                  gc_fit.out_of_fold_distances(x[:6], 3, 0))


def test_local_standardisation_leaves_out_the_bank_rows_of_the_images_copies():
    """A bank of every patch (so each row's image is known): an image's score is its patches'
    distance to the nearest row of another original's group, brute force. The copies' rows lie
    near the image's patches but not on them, so only the group tells they are its own."""
    from calibration.methods import patchcore as patchcore_fit

    rng = np.random.default_rng(4)
    feats, groups = _with_copies(rng.standard_normal((5, 8, 3, 3)).astype(np.float32), copies=2, noise=1e-2)
    n, d, h, w = feats.shape
    local = patchcore_fit.fit(feats, small_settings(scorer={**GC, "coreset": {"ratio": 1.0}}).scorer.local(), 0,
                              NoProgress())
    patches = feats.transpose(0, 2, 3, 1).reshape(n, h * w, d).astype(np.float64)
    assert len(local.memory_bank) == n * h * w
    row_image = np.array([int(np.flatnonzero((patches == r).all(2).any(1))[0]) for r in local.memory_bank])
    bank = local.memory_bank.astype(np.float64)
    want = []
    for i in range(n):
        other = bank[groups[row_image] != groups[i]]
        want.append(np.sqrt(((patches[i][:, None] - other[None]) ** 2).sum(2)).min(1).max())
    mean, std = gc_fit.local_standardisation(feats, local, n_images=n, seed=0, groups=groups)
    np.testing.assert_allclose([mean, std], [np.mean(want), np.std(want, ddof=1)], rtol=1e-5)
    leaky_mean, _ = gc_fit.local_standardisation(feats, local, n_images=n, seed=0)
    assert leaky_mean < 0.1 * mean  # the copies' rows, 1e-2 away, stood in for the image's own


def test_calibrate_passes_each_rows_original_to_the_fit(monkeypatch, golden_dir, tmp_path):
    """calibrate --augment: the fit gets the group of every row (copies share their original's),
    so the two tests above apply to what calibration fits."""
    import functools

    from calibration.calibrate import calibrate

    real, seen = gc_fit.fit, []

    @functools.wraps(real)
    def spy(features, config, seed, progress, groups=None):
        seen.append((len(features), groups))
        return real(features, config, seed, progress, **({} if groups is None else {"groups": groups}))

    monkeypatch.setattr(gc_fit, "fit", spy)
    settings = small_settings(scorer=GC, calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 0})
    calibrate(settings, golden_dir, tmp_path / "b", progress=False, augment=2)
    originals = len(list(golden_dir.glob("*.png")))
    # split fit and refit on all (the refit runs on a thread beside the split: either may start first)
    assert sorted(n for n, _ in seen) == [3 * (originals - originals // 4), 3 * originals]
    for n, groups in seen:
        assert groups is not None, "the fit was not told which rows are copies of one image"
        ids, counts = np.unique(groups, return_counts=True)
        assert len(ids) == n // 3 and (counts == 3).all()
