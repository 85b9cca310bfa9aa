"""Tiling and the geometry choice: the tile grid covers the work image, stitching the tiles'
outputs gives what the network would give on the whole image, calibration picks a scale from the
golden frames and calibration.min_defect_px (capped by preprocess.max_tiles), and the bundle's
geometry round-trips through its manifest (bundles from before tiling included)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calibration.geometry import choose_geometry
from inspector.errors import ConfigError
from inspector.preprocess import Preprocessor, PreprocessSpec
from inspector.settings import settings_from_dict
from inspector.tiling import TileGrid, axis_starts


def _pre(**section):
    return settings_from_dict({"preprocess": section}, base_dir=Path("/")).preprocess


def _pool8(x: np.ndarray) -> np.ndarray:
    """A stand-in network with a stride-8 output: [N, 3, H, W] -> 8x8 block means [N, 3, H/8, W/8]."""
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 8, 8, w // 8, 8).mean(axis=(3, 5))


def test_tiles_cover_the_work_image_at_multiples_of_8_and_overlap():
    starts = axis_starts(1024, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1024 - 256
    assert all(s % 8 == 0 for s in starts)
    steps = np.diff(starts)
    assert (steps <= 256 - 32 + 8).all()  # consecutive tiles overlap (by ~32 px, at least 24)
    assert axis_starts(256, 256, 32) == (0,)


def test_stitching_tile_outputs_equals_the_network_on_the_whole_image():
    grid = TileGrid.plan(1000, 300, 256, 256, 32)  # padded to 1024x320: 5 x 2 tiles
    assert (grid.work_w, grid.work_h, grid.tile_w, grid.tile_h) == (1024, 320, 256, 256)
    assert (len(grid.xs), len(grid.ys)) == (5, 2)
    rng = np.random.default_rng(0)
    works = [rng.random((3, 320, 1024), dtype=np.float32) for _ in range(2)]
    tiles = grid.split(works)
    assert tiles.shape == (2 * 10, 3, 256, 256)
    stitched = grid.stitch({"features": _pool8(tiles)}, 2)["features"]
    np.testing.assert_allclose(stitched, _pool8(np.stack(works)), rtol=1e-6)


def test_a_small_work_image_is_one_non_square_input():
    grid = TileGrid.plan(200, 100, 256, 256, 32)  # padded 224x128: fits one tile
    assert not grid.tiled and grid.tile_hw == (128, 224)
    spec = PreprocessSpec(224, 128, work=(200, 100))
    chw, tr = Preprocessor(spec).prepare(np.zeros((50, 100, 3), np.uint8))
    assert chw.shape == (3, 128, 224)  # padded by reflection, not distorted
    assert (tr.scale_x, tr.scale_y) == (2.0, 2.0)


def test_geometry_round_trips_and_old_manifests_read_as_untiled():
    spec = PreprocessSpec(256, 128, work=(2048, 128), tile_overlap=32, frame_scale=0.5, min_defect_px=16.0)
    again = PreprocessSpec.from_json(spec.to_json())
    assert again == spec and again.grid.n_tiles == 9
    old = {"width": 256, "height": 256, "roi": None, "color": "rgb", "scale": "0..1", "align": None}
    legacy = PreprocessSpec.from_json(old)
    assert legacy.work_size == (256, 256) and not legacy.grid.tiled


def test_auto_keeps_the_aspect_ratio_of_fabric_strips():
    # 4096x256 strips, the smallest defect 16 px: scale 0.5 makes it one 8-px feature cell
    g = choose_geometry(_pre(), 16.0, [(256, 4096, 3)] * 5)
    assert g.spec.work_size == (2048, 128) and (g.spec.width, g.spec.height) == (256, 128)
    assert g.spec.grid.n_tiles == 9 and g.spec.frame_scale == pytest.approx(0.5) and not g.notes


def test_auto_caps_the_tiles_and_says_which_defect_is_then_resolved():
    g = choose_geometry(_pre(max_tiles=16), 8.0, [(256, 4096)] * 3)
    assert g.spec.grid.n_tiles <= 16
    assert g.spec.frame_scale < 1.0 and g.spec.min_defect_px > 8.0
    assert len(g.notes) == 1 and "max_tiles 16" in g.notes[0] and f"{g.spec.min_defect_px:.0f} px" in g.notes[0]


def test_auto_never_upscales_and_never_shrinks_below_one_tile():
    small = choose_geometry(_pre(), 16.0, [(100, 120, 3)] * 3)  # smaller than a tile: scale 1
    assert small.spec.frame_scale == 1.0 and small.spec.work_size == (120, 100)
    assert (small.spec.width, small.spec.height) == (128, 128) and not small.spec.grid.tiled
    coarse = choose_geometry(_pre(), 200.0, [(900, 900, 3)] * 3)  # big defects: the longer side stays 256
    assert coarse.spec.work_size == (256, 256) and not coarse.spec.grid.tiled


def test_median_golden_size_inside_the_roi_sets_the_work_size():
    g = choose_geometry(_pre(roi=[100, 0, 600, 300]), 16.0, [(400, 1000, 3), (420, 990, 3), (380, 1010, 3)])
    assert g.spec.work_size == (300, 150) and g.spec.roi == (100, 0, 600, 300)


def test_explicit_size_and_scale_are_used_as_given():
    g = choose_geometry(_pre(size=[512, 256]), 16.0, [(100, 200, 3)])
    assert g.spec.work_size == (512, 256) and g.spec.grid.n_tiles == 3
    g = choose_geometry(_pre(scale=0.25), 16.0, [(1000, 2000, 3)])
    assert g.spec.work_size == (500, 250)
    g = choose_geometry(_pre(size=[128, 128]), 16.0, [(128, 128, 3)])  # the old square input, untiled
    assert (g.spec.width, g.spec.height) == (128, 128) and not g.spec.grid.tiled


@pytest.mark.parametrize("section, words", [
    ({"size": [512, 250]}, ["preprocess.size", "multiple of 32"]),
    ({"size": [512, 256], "scale": 0.5}, ["give one of them"]),
    ({"tile_overlap": 20}, ["tile_overlap 20", "multiple of 8"]),
    ({"tile": [256, 100]}, ["preprocess.tile", "multiple of 32"]),
])
def test_bad_geometry_settings_are_one_clear_line(section, words):
    with pytest.raises(ConfigError) as exc:
        _pre(**section)
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_defaults_are_auto():
    cfg = _pre()
    assert cfg.size == "auto" and cfg.scale == "auto" and cfg.tile == (256, 256)
