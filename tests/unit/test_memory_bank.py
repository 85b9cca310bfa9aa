"""PatchCore scoring: planted outliers are found where they are; batching changes nothing."""
import numpy as np
import pytest

from calibration.methods import NoProgress
from calibration.methods.coreset import coreset_size, greedy_coreset
from inspector.methods import patchcore
from inspector.methods.knn import ExactSearch, search_for_engine
from inspector.methods.registry import Scorer


def nearest_distances(queries, bank, chunk=4096):
    return ExactSearch(bank).search(queries, chunk=chunk)


def bank_scorer(bank, *, smoothing_sigma=4.0, bank_knn_index=None, search="fp32") -> Scorer:
    params = patchcore.Params(smoothing_sigma=smoothing_sigma, reweight=bank_knn_index is not None, search=search)
    return Scorer(patchcore, patchcore.State(params, bank, bank_knn_index))


def test_nearest_distances_are_exact():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    d, idx = nearest_distances(q, bank, chunk=7)
    brute = np.linalg.norm(q[:, None] - bank[None], axis=2)
    np.testing.assert_allclose(d, brute.min(1), rtol=1e-4, atol=1e-4)
    assert (idx == brute.argmin(1)).all()


def test_coreset_covers_clusters_that_random_sampling_misses():
    rng = np.random.default_rng(0)
    big = rng.normal(0, 0.1, size=(5000, 8))
    rare = rng.normal(5, 0.1, size=(5, 8))  # a rare but normal pattern
    x = np.concatenate([big, rare]).astype(np.float32)
    idx = greedy_coreset(x, 10, projection_dim=8, seed=0)
    assert len(set(idx.tolist())) == 10
    assert (idx >= 5000).any(), "k-center greedy must pick the far cluster"
    assert coreset_size(1000, size=None, ratio=0.01) == 10
    assert coreset_size(10**6, size=None, ratio=0.01, max_size=4000) == 4000
    assert coreset_size(1000, size=50, ratio=0.01, max_size=10) == 50  # an explicit size wins


def _greedy_k_center(x: np.ndarray, start: int, k: int) -> np.ndarray:
    """The textbook greedy k-center (float64, every distance recomputed), for reference."""
    x = x.astype(np.float64)
    picks = [start]
    mind = ((x - x[start]) ** 2).sum(1)
    for _ in range(1, k):
        picks.append(int(mind.argmax()))
        mind = np.minimum(mind, ((x - x[picks[-1]]) ** 2).sum(1))
    return np.array(picks)


@pytest.mark.parametrize("seed", [0, 1])
def test_coreset_picks_what_the_textbook_greedy_picks(seed):
    # clustered patch-like data (what the pruned search must handle: dense clusters, outliers)
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, size=(40, 24))
    x = (centres[rng.integers(0, 40, 20000)] + rng.normal(0, 0.15, size=(20000, 24))).astype(np.float32)
    x[:30] += rng.normal(0, 2, size=(30, 24)).astype(np.float32)  # a few far-off patches
    idx = greedy_coreset(x, 300, projection_dim=64, seed=seed)  # 64 >= 24: no projection
    np.testing.assert_array_equal(idx, _greedy_k_center(x, int(idx[0]), 300))


def _features(rng, n, d=16, h=8, w=8):
    base = rng.normal(0, 0.05, size=(n, d, h, w)).astype(np.float32)
    base[:, 0] += 1.0
    return base


def test_planted_outlier_is_flagged_at_its_place():
    rng = np.random.default_rng(0)
    golden = _features(rng, 10)
    bank = golden.transpose(0, 2, 3, 1).reshape(-1, 16)
    scorer = bank_scorer(bank, smoothing_sigma=2.0)
    test = _features(rng, 2)
    test[1, :, 5, 2] += 3.0  # one anomalous patch at row 5, col 2
    sm = scorer.score({"features": test}, (64, 64))
    assert sm.image_scores[1] > 5 * sm.image_scores[0]
    peak = np.unravel_index(sm.pixel_maps[1].argmax(), sm.pixel_maps[1].shape)
    # patch (5, 2) on an 8x8 grid upsampled to 64x64 covers rows 40..47, cols 16..23
    assert 36 <= peak[0] <= 51 and 12 <= peak[1] <= 27


def test_batch_scores_equal_one_by_one():
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(200, 16)).astype(np.float32)
    scorer = bank_scorer(bank)
    feats = rng.normal(size=(4, 16, 8, 8)).astype(np.float32)
    whole = scorer.score({"features": feats}, (32, 32))
    for i in range(4):
        one = scorer.score({"features": feats[i:i + 1]}, (32, 32))
        np.testing.assert_allclose(one.image_scores[0], whole.image_scores[i], rtol=1e-5)
        np.testing.assert_allclose(one.pixel_maps[0], whole.pixel_maps[i], rtol=1e-4, atol=1e-5)


def test_reweighting_lowers_scores_in_dense_regions():
    from calibration.methods.coreset import bank_neighbours

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(100, 8)).astype(np.float32)
    plain = bank_scorer(bank)
    rew = bank_scorer(bank, bank_knn_index=bank_neighbours(bank, 3))
    feats = rng.normal(size=(3, 8, 4, 4)).astype(np.float32)
    a = plain.score({"features": feats}, (16, 16)).image_scores
    b = rew.score({"features": feats}, (16, 16)).image_scores
    assert (b <= a + 1e-6).all() and (b > 0).all()


def _patch_like(rng, n, w, offset):
    """Patch-feature-like rows: a 12-dimensional latent spread over 152 channels plus a little
    noise and a large common offset (real features have a low intrinsic dimension and are not
    centred; the bf16 search must cope with their big norms)."""
    return (rng.normal(0, 1, (n, len(w))) @ w + rng.normal(0, 0.05, (n, w.shape[1])) + offset).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_search_picks_a_row_within_a_hair_of_the_nearest(seed):
    rng = np.random.default_rng(seed)
    w, offset = rng.normal(0, 1, (12, 152)), rng.normal(2, 1, 152)
    bank = _patch_like(rng, 2000, w, offset)
    queries = _patch_like(rng, 1024, w, offset)
    queries[:10] += rng.normal(0, 1.0, (10, 152)).astype(np.float32)  # a few anomalous patches
    _, exact_idx = nearest_distances(queries, bank)
    exact = np.linalg.norm(queries - bank[exact_idx], axis=1)
    state = bank_scorer(bank).state.with_search("bf16")
    assert state.searcher.name == "bf16"
    dist, idx = state.searcher.search(queries)
    # the distance returned is the exact fp32 distance to the row it chose ...
    np.testing.assert_allclose(dist, np.linalg.norm(queries - bank[idx], axis=1), rtol=1e-5)
    assert np.all(dist >= exact * (1 - 1e-5))  # ... so never below the true nearest
    assert np.all(dist <= exact * 1.01)  # and within 1% of it (measured: <= 0.53%)
    assert (idx == exact_idx).mean() > 0.97  # measured 98.5-99.2%; the rest are near-ties
    assert np.argmax(dist) == np.argmax(exact)  # the worst patch stays the worst


def test_search_precision_follows_the_engine_and_fp32_stays_exact():
    rng = np.random.default_rng(3)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    state = bank_scorer(bank).state.with_search("bf16").with_search("fp32")
    assert state.searcher.name == "fp32"
    np.testing.assert_array_equal(state.searcher.search(q)[1], nearest_distances(q, bank)[1])
    # a bundle says how it was calibrated to search; bundles from before bf16 search say nothing
    assert patchcore.State.from_bundle(patchcore.Params(search="bf16"), {"memory_bank": bank}).searcher.name == "bf16"
    assert patchcore.State.from_bundle(patchcore.Params(), {"memory_bank": bank}).searcher.name == "fp32"
    assert search_for_engine("bf16") == "bf16" and search_for_engine("fp16") == "fp32"
    assert patchcore.for_engine(state, "bf16").params.search == "bf16"


def test_coreset_is_picked_among_a_bounded_seeded_sample_of_patches():
    """Large golden sets (tiled frames) pick the bank among coreset.max_candidates patches; the
    bank still holds real golden patches, and the same seed gives the same bank."""
    from calibration.methods.patchcore import fit

    rng = np.random.default_rng(3)
    feats = rng.normal(size=(30, 16, 10, 10)).astype(np.float32)  # 3000 patches
    cfg = patchcore.Config(coreset={"size": 50, "max_candidates": 1000})
    state = fit(feats, cfg, 1, NoProgress())
    bank = state.memory_bank
    patches = feats.transpose(0, 2, 3, 1).reshape(-1, 16)
    assert state.params.coreset_candidates == 1000 and state.params.patches_seen == 3000
    assert len(bank) == 50 and all((patches == row).all(1).any() for row in bank)
    again = fit(feats, cfg, 1, NoProgress()).memory_bank
    np.testing.assert_array_equal(bank, again)
    everything = fit(feats, patchcore.Config(coreset={"size": 50, "max_candidates": None}), 1, NoProgress())
    assert everything.params.coreset_candidates == 3000
