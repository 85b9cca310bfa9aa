"""A ScoreMap's patch maps may be made on first use (inspector/methods/base.py): the daemon asks
for the fails' maps only, so a method whose map costs a second search defers it."""
import numpy as np
import pytest

from inspector.methods.base import ScoreMap, score_patch_maps


def test_deferred_maps_are_made_once_on_first_use():
    calls = []
    maps = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)

    def make():
        calls.append(1)
        return maps

    s = score_patch_maps(make, (32, 32), 2.0, np.array([1.0, 2.0], np.float32))
    assert calls == [] and s.image_scores.tolist() == [1.0, 2.0]
    eager = score_patch_maps(maps, (32, 32), 2.0, np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(s.pixel_map(1), eager.pixel_map(1))
    np.testing.assert_array_equal(s.pixel_maps, eager.pixel_maps)
    assert s.cell == 8 and calls == [1]


def test_deferred_maps_need_the_methods_own_image_scores_and_exclude_eager_maps():
    with pytest.raises(ValueError, match="image scores"):
        score_patch_maps(lambda: np.zeros((1, 2, 2), np.float32), (16, 16), 0.0)
    with pytest.raises(ValueError, match="not both"):
        ScoreMap(np.zeros(1, np.float32), np.zeros((1, 2, 2), np.float32), deferred_maps=lambda: None)
