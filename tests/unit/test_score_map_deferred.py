"""A ScoreMap's patch maps may be made when asked for (inspector/methods/base.py): the daemon asks
for the fails' maps only, so a method whose map costs a search of its own defers it, and a fail
in a batch of passes pays for its own frame's map alone."""
import dataclasses

import numpy as np
import pytest

from inspector.methods.base import score_patch_maps

MAPS = np.arange(3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
SCORES = np.array([1.0, 2.0, 3.0], np.float32)


def _deferred():
    asked = []

    def make(rows):
        asked.append(np.arange(3)[rows].tolist())
        return MAPS[rows]

    return score_patch_maps(make, (32, 32), 2.0, SCORES, guide_cells=1, grid_hw=(4, 4)), asked


def test_a_frames_map_is_made_for_that_frame_alone_and_once():
    s, asked = _deferred()
    eager = score_patch_maps(MAPS, (32, 32), 2.0, SCORES, guide_cells=1)
    assert asked == [] and s.image_scores.tolist() == [1.0, 2.0, 3.0]
    assert s.cell == eager.cell == 8 and s.guide_radius == 8 and asked == []  # the grid is known
    np.testing.assert_array_equal(s.pixel_map(1), eager.pixel_map(1))
    s.pixel_map(1)
    assert asked == [[1]]


def test_the_whole_batch_is_made_once_and_the_function_let_go():
    s, asked = _deferred()
    np.testing.assert_array_equal(s.pixel_maps, score_patch_maps(MAPS, (32, 32), 2.0, SCORES).pixel_maps)
    s.pixel_map(2), s.patch_maps
    assert asked == [[0, 1, 2]] and s.deferred_maps is None


def test_deferred_maps_need_image_scores_and_a_grid_and_given_maps_win():
    with pytest.raises(ValueError, match="image scores"):
        score_patch_maps(lambda rows: MAPS[rows], (32, 32), 0.0)
    with pytest.raises(ValueError, match="grid_hw"):
        score_patch_maps(lambda rows: MAPS[rows], (32, 32), 0.0, SCORES)
    s, asked = _deferred()
    joined = dataclasses.replace(s, patch_maps=MAPS + 1)  # e.g. a batch joined from its parts' maps
    np.testing.assert_array_equal(joined.patch_map(0), MAPS[0] + 1)
    assert joined.deferred_maps is None and asked == []
