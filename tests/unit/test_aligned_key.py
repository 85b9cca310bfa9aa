"""The aligned map's variant key (``aligned_map.key_region``): on a line that runs several variants of
a part, the region that says which variant a part is (a label's fruit) picks the golden images the
map compares a frame with, so a part whose body does not match its key lights up on the body: the
label says cherry, the juice is banana's. Without a key the map's references are the golden images
most like the frame as a whole (the banana bottles), and only the label lights."""
import numpy as np
import pytest
from pydantic import ValidationError

from calibration.methods import NoProgress
from calibration.methods import global_context as gc_fit
from calibration.methods.aligned import key_cells
from inspector.methods import aligned
from inspector.methods import global_context as gc
from inspector.methods.base import StateInvalid
from tests.conftest import small_settings
from tests.unit._scorer_data import scorer_of

GC = {"type": "memory_bank", "method": "global_context", "coreset": {"size": 400}}
ON = {"enabled": True, "images": 40, "k": 3, "radius": 1, "image_weight": 1.0, "dims": 6}
KEY = (slice(2, 6), slice(2, 6))  # the key's cells on the 16x16 grid: fractions 0.125-0.375
KEY_REGION = [0.125, 0.125, 0.375, 0.375]


def _parts(rng, n, key, body):
    """[n, 12, 16, 16]: the key's cells carry the variant's key pattern, every other cell its body's."""
    f = rng.normal(scale=0.3, size=(n, 12, 16, 16))
    f[:, body] += 3.0
    f[:, 6 + key, KEY[0], KEY[1]] += 6.0
    f[:, body, KEY[0], KEY[1]] -= 3.0  # the label covers the body there
    return f.astype(np.float32)


def _fit(golden, **over):
    cfg = small_settings(scorer={**GC, "global_context": {"aligned_map": {**ON, **over}}}).scorer
    state = gc_fit.fit(golden, cfg, 0, NoProgress())
    return state, scorer_of(state.params.model_dump(mode="json"), state.arrays())


def _inside_outside(patch_map):
    inside = np.zeros(patch_map.shape, bool)
    inside[KEY] = True
    return float(patch_map[inside].mean()), float(patch_map[~inside].mean())


@pytest.mark.parametrize("directions", [{}, {"dims": 10, "coarse_dims": 4}], ids=["fine", "with_coarse_half"])
def test_a_key_region_judges_the_body_against_the_variant_its_key_names(directions):
    rng = np.random.default_rng(0)
    golden = np.concatenate([_parts(rng, 20, key=0, body=0), _parts(rng, 20, key=1, body=1)])
    normal, mismatch = _parts(rng, 1, key=0, body=0), _parts(rng, 1, key=0, body=1)  # key 0 names body 0
    test = np.concatenate([normal, mismatch])
    _, plain = _fit(golden, **directions)
    state, keyed = _fit(golden, key_region=KEY_REGION, **directions)
    assert state.params.aligned.key_cells == [2, 6, 2, 6]
    assert state.params.aligned.coarse_dims == directions.get("coarse_dims", 0)  # both halves take the key's picks
    key_in, body = _inside_outside(keyed.score({"features": test}, (128, 128)).patch_maps[1])
    assert body > key_in  # the body is wrong for its key
    plain_in, plain_body = _inside_outside(plain.score({"features": test}, (128, 128)).patch_maps[1])
    assert plain_in > plain_body  # without a key: the body's own variant found, the key is what differs
    normal_map = keyed.score({"features": test}, (128, 128)).patch_maps[0]
    assert normal_map.max() < body  # a part whose body matches its key stays dark
    # the image term keeps the whole layout's references: the key is the map's alone
    np.testing.assert_array_equal(plain.score({"features": test}, (128, 128)).image_scores,
                                  keyed.score({"features": test}, (128, 128)).image_scores)


def test_key_cells_cover_every_cell_the_region_touches_in_the_inspected_area_not_the_padding():
    assert key_cells((0.125, 0.125, 0.375, 0.375), (16, 16)) == (2, 6, 2, 6)
    # a 25x50-cell inspected area on a 28x52 grid (padding right and below): fractions are of the area
    assert key_cells((0.4, 0.5, 0.6, 0.55), (52, 28), (50.0, 25.0)) == (25, 28, 10, 15)
    assert key_cells((0.99, 0.99, 1.0, 1.0), (16, 16)) == (15, 16, 15, 16)  # at least one cell, inside
    # a boundary on a cell edge whose product rounds just past it takes no cell beside it
    assert key_cells((0.03, 0.29, 0.07, 0.57), (100, 100)) == (29, 57, 3, 7)


@pytest.mark.parametrize("aligned_map, words", [
    ({"key_region": [0.5, 0.1, 0.4, 0.2]}, "x0 < x1"),
    ({"key_region": [0.1, 0.1, 1.2, 0.2]}, "less than or equal to 1"),
    ({"key_cells": [1, 2, 1, 2]}, "written by calibration"),
])
def test_a_bad_key_region_and_a_hand_written_key_cells_are_refused(aligned_map, words):
    with pytest.raises(ValidationError, match=words):
        gc.Config.model_validate({"global_context": {"aligned_map": aligned_map}})


def test_a_bundle_whose_key_cells_leave_its_grid_is_refused_and_old_bundles_have_no_key():
    rng = np.random.default_rng(1)
    golden = np.concatenate([_parts(rng, 6, key=0, body=0), _parts(rng, 6, key=1, body=1)])
    state, _ = _fit(golden)
    assert state.params.aligned.key_cells is None and state.aligned_key is None
    params = state.params.model_dump(mode="json")
    del params["aligned"]["key_cells"]  # as a bundle written before the key has it
    assert scorer_of(params, state.arrays()) is not None
    params["aligned"]["key_cells"] = [10, 20, 0, 4]
    with pytest.raises(StateInvalid, match="not inside the 16x16 patch grid"):
        scorer_of(params, state.arrays())


def test_the_key_is_compared_patch_by_patch_so_its_arrangement_counts_not_only_its_average():
    rng = np.random.default_rng(2)
    golden = rng.normal(scale=0.05, size=(2, 4, 8, 8)).astype(np.float32)
    golden[0, 0, 2:4, 2:3] += 4.0  # a mark on the key's left half
    golden[1, 0, 2:4, 3:4] += 4.0  # the same mark on its right half: the key's average is the same
    frame = golden[:1] + rng.normal(scale=0.05, size=(1, 4, 8, 8)).astype(np.float32)
    box = (2, 4, 2, 4)
    key = np.ascontiguousarray(golden[:, :, 2:4, 2:4].transpose(0, 2, 3, 1))
    assert aligned.key_neighbours(frame, key, box, k=1, radius=0).tolist() == [[0]]
    frame = golden[1:] + rng.normal(scale=0.05, size=(1, 4, 8, 8)).astype(np.float32)
    assert aligned.key_neighbours(frame, key, box, k=2, radius=0).tolist() == [[1, 0]]
    # a key smaller than the window: the shifts past its edge have no pairs, the rest still count
    for radius in (1, 2, 3, 8):
        assert aligned.key_neighbours(frame, key, box, k=1, radius=radius).tolist() == [[1]]


def test_a_key_region_over_a_quarter_of_the_area_is_warned_about(caplog):
    rng = np.random.default_rng(4)
    golden = np.concatenate([_parts(rng, 6, key=0, body=0), _parts(rng, 6, key=1, body=1)])
    with caplog.at_level("WARNING"):
        _fit(golden, key_region=KEY_REGION)
        assert not any("covers" in r.getMessage() for r in caplog.records)
        state, _ = _fit(golden, key_region=[0.0, 0.0, 0.75, 0.5])
    assert state.params.aligned.key_cells == [0, 8, 0, 12]
    assert any("key_region covers 38% of the inspected area" in r.getMessage() for r in caplog.records)


def test_a_key_region_with_the_aligned_map_off_says_so_in_one_line(caplog):
    rng = np.random.default_rng(3)
    golden = np.concatenate([_parts(rng, 6, key=0, body=0), _parts(rng, 6, key=1, body=1)])
    cfg = small_settings(scorer={**GC, "global_context": {"aligned_map": {"enabled": False,
                                                                         "key_region": KEY_REGION}}}).scorer
    with caplog.at_level("WARNING"):
        state = gc_fit.fit(golden, cfg, 0, NoProgress())
    assert state.params.aligned is None
    assert any("key_region is set but the aligned map is off" in r.getMessage() for r in caplog.records)
