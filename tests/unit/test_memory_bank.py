"""PatchCore scoring: planted outliers are found where they are; batching changes nothing."""
import numpy as np

from calibration.fitters.coreset import coreset_size, greedy_coreset
from inspector.scoring.memory_bank import MemoryBankScorer, nearest_distances


def test_nearest_distances_are_exact():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(50, 16)).astype(np.float32)
    d, idx = nearest_distances(q, bank, (bank ** 2).sum(1), chunk=7)
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


def _features(rng, n, d=16, h=8, w=8):
    base = rng.normal(0, 0.05, size=(n, d, h, w)).astype(np.float32)
    base[:, 0] += 1.0
    return base


def test_planted_outlier_is_flagged_at_its_place():
    rng = np.random.default_rng(0)
    golden = _features(rng, 10)
    bank = golden.transpose(0, 2, 3, 1).reshape(-1, 16)
    scorer = MemoryBankScorer(bank, smoothing_sigma=2.0)
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
    scorer = MemoryBankScorer(bank)
    feats = rng.normal(size=(4, 16, 8, 8)).astype(np.float32)
    whole = scorer.score({"features": feats}, (32, 32))
    for i in range(4):
        one = scorer.score({"features": feats[i:i + 1]}, (32, 32))
        np.testing.assert_allclose(one.image_scores[0], whole.image_scores[i], rtol=1e-5)
        np.testing.assert_allclose(one.pixel_maps[0], whole.pixel_maps[i], rtol=1e-4, atol=1e-5)


def test_reweighting_lowers_scores_in_dense_regions():
    from calibration.fitters.coreset import bank_neighbours

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(100, 8)).astype(np.float32)
    plain = MemoryBankScorer(bank)
    rew = MemoryBankScorer(bank, bank_knn_index=bank_neighbours(bank, 3))
    feats = rng.normal(size=(3, 8, 4, 4)).astype(np.float32)
    a = plain.score({"features": feats}, (16, 16)).image_scores
    b = rew.score({"features": feats}, (16, 16)).image_scores
    assert (b <= a + 1e-6).all() and (b > 0).all()
