"""Geometry from the golden frames, end to end: calibration keeps the golden frames' aspect ratio
(a 2:1 part is one non-square network input, not squashed to a square), a frame larger than the
network input is tiled (all tiles in one engine call, stitched into one map without seams), a
small defect on a big frame is found at its place in frame pixels where the squashed input scores
it lower, ROI + alignment work with tiling, and the real daemon records regions and heatmaps in
frame coordinates."""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from calibration.calibrate import calibrate
from calibration.synthetic import make_part
from inspector.bundle import load_bundle
from inspector.heatmap import render_overlay
from inspector.runtime import build_pipeline
from inspector.settings import engine_config, settings_from_dict
from inspector.types import Frame, VerdictKind
from tests.conftest import moved, write_png
from tests.integration.daemon_helpers import Daemon, drop_image, make_workspace, wait_rows

PART = 128  # side of one drawn part; frames are grids of them
COLS, ROWS = 6, 3  # a 768x384 frame: 4 x 2 tiles of 256 at full resolution
SPOT_XY = (4 * PART + 64 + 10, 1 * PART + 64 + 8)  # on the plate of part (4, 1), near a tile seam
SPOT_R = 4  # an 8 px defect


def grid_frame(rng: np.random.Generator, cols: int, rows: int, defect=None, at=None) -> np.ndarray:
    """cols x rows drawn parts side by side (each with its own small pose and lighting jitter);
    ``defect`` drawn into the part at (col, row) ``at``."""
    return np.vstack([np.hstack([make_part(rng, size=PART, defect=defect if at == (c, r) else None)
                                 for c in range(cols)]) for r in range(rows)])


def with_spot(frame: np.ndarray, xy=SPOT_XY, r=SPOT_R) -> np.ndarray:
    out = frame.copy()
    cv2.circle(out, xy, r, (240, 240, 245), -1, cv2.LINE_AA)
    return out


def settings(**overrides):
    # fit once on half the golden frames and set the threshold on the other half (the same
    # condition the test frames meet): a steady threshold from few frames, and a quick calibration
    data = {"calibration": {"holdout": 0.5, "min_images": 4, "min_defect_px": 8, "refit_on_all": False,
                            "threshold": {"margin": 3.0}},
            "engine": {"max_batch": 8, "threads": 2}, "scorer": {"coreset": {"ratio": 0.1, "max_size": 800}}}
    data.update(overrides)
    return settings_from_dict(data, base_dir=Path("/"))


def frame(image: np.ndarray, name: str = "f.png") -> Frame:
    return Frame(id=name, source="test", captured_at=datetime.now(timezone.utc), image=image)


def overlaps(region, x0, y0, x1, y1) -> bool:
    return region.x <= x1 and region.x + region.w >= x0 and region.y <= y1 and region.y + region.h >= y0


@pytest.fixture(scope="module")
def big_golden(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("golden_big")
    rng = np.random.default_rng(11)
    for i in range(8):
        write_png(d / f"g{i:02d}.png", grid_frame(rng, COLS, ROWS))
    return d


@pytest.fixture(scope="module")
def tiled_calibration(tmp_path_factory, big_golden):
    out = tmp_path_factory.mktemp("tiled") / "bundle"
    return calibrate(settings(), big_golden, out, progress=False)


@pytest.fixture(scope="module")
def tiled_bundle(tiled_calibration) -> Path:
    return tiled_calibration.bundle_dir


@pytest.fixture(scope="module")
def tiled_pipeline(tiled_bundle):
    pipeline = build_pipeline(load_bundle(tiled_bundle), engine_config(max_batch=8, threads=2))
    yield pipeline
    pipeline.engine.close()


@pytest.fixture(scope="module")
def test_frames():
    rng = np.random.default_rng(23)
    good = grid_frame(rng, COLS, ROWS)
    return good, with_spot(grid_frame(rng, COLS, ROWS))


def test_a_wide_part_is_one_non_square_input_not_squashed(tmp_path):
    rng = np.random.default_rng(3)
    golden = tmp_path / "golden"
    golden.mkdir()
    for i in range(8):
        write_png(golden / f"g{i}.png", grid_frame(rng, 2, 1))  # 256x128
    calibrate(settings(), golden, tmp_path / "bundle", progress=False)
    bundle = load_bundle(tmp_path / "bundle")
    pre = bundle.manifest.as_dict()["preprocess"]
    assert pre["work_size"] == [256, 128] and (pre["width"], pre["height"]) == (256, 128) and pre["tiles"] == 1
    assert bundle.manifest.as_dict()["engine"]["input_shape"] == [3, 128, 256]
    pipeline = build_pipeline(bundle, engine_config(max_batch=4, threads=2))
    try:
        bad = grid_frame(rng, 2, 1, defect="missing_hole", at=(1, 0))
        good, fail = pipeline.inspect([frame(grid_frame(rng, 2, 1)), frame(bad)])
    finally:
        pipeline.engine.close()
    assert good.kind is VerdictKind.PASS, good.score
    assert fail.kind is VerdictKind.FAIL and fail.regions
    assert fail.regions[0].x >= 128 - 16  # in the right-hand part, in frame pixels
    assert fail.pixel_map.shape == (128, 256)


def test_auto_geometry_tiles_a_big_frame_at_full_resolution(tiled_bundle):
    pre = load_bundle(tiled_bundle).manifest.as_dict()["preprocess"]
    # min_defect_px 8 -> scale 1: the 768x384 frame at full resolution, 4 x 2 tiles of 256
    assert pre["work_size"] == [768, 384] and (pre["width"], pre["height"]) == (256, 256)
    assert pre["tiles"] == 8 and pre["frame_scale"] == 1.0 and pre["min_defect_px"] == 8.0


def test_a_small_defect_is_found_at_its_place_and_squashing_scores_it_lower(tmp_path, big_golden, tiled_pipeline,
                                                                           test_frames):
    good, spotted = test_frames
    ok, bad = tiled_pipeline.inspect([frame(good), frame(spotted)])
    assert ok.kind is VerdictKind.PASS, (ok.score, ok.threshold)
    assert bad.kind is VerdictKind.FAIL, (bad.score, bad.threshold)
    x, y = SPOT_XY
    assert overlaps(bad.regions[0], x - SPOT_R, y - SPOT_R, x + SPOT_R, y + SPOT_R), bad.regions
    assert bad.pixel_map.shape == (384, 768)
    overlay = render_overlay(spotted, bad.pixel_map, bad.transform, 1.0, bad.regions)
    assert overlay.shape == spotted.shape  # the heatmap is in frame pixels

    calibrate(settings(preprocess={"size": [256, 256]}), big_golden, tmp_path / "squashed", progress=False)
    squashed = build_pipeline(load_bundle(tmp_path / "squashed"), engine_config(max_batch=8, threads=2))
    try:
        (sq,) = squashed.inspect([frame(spotted)])
    finally:
        squashed.engine.close()
    assert sq.score / sq.threshold < bad.score / bad.threshold, (sq.score, sq.threshold, bad.score, bad.threshold)


def test_all_tiles_of_a_batch_go_to_the_engine_in_one_call(tiled_pipeline, test_frames):
    engine = tiled_pipeline.engine
    calls = []
    real_run = engine.run

    def counting_run(batch):
        calls.append(batch.shape)
        return real_run(batch)

    engine.run = counting_run
    try:
        verdicts = tiled_pipeline.inspect([frame(f) for f in test_frames])
    finally:
        del engine.run
    assert [v.score is not None for v in verdicts] == [True, True]
    assert calls == [(2 * 8, 3, 256, 256)]


def test_stitched_map_of_a_good_frame_has_no_seams(tiled_pipeline, test_frames):
    tiled_pipeline.maps_for_passes = True
    try:
        (v,) = tiled_pipeline.inspect([frame(test_frames[0])])
    finally:
        tiled_pipeline.maps_for_passes = False
    grid = tiled_pipeline.grid
    m = v.pixel_map
    # the columns and rows where the stitched map changes from one tile to the next
    cuts_x = [(a + b + grid.tile_w) // 2 for a, b in zip(grid.xs, grid.xs[1:])]
    cuts_y = [(a + b + grid.tile_h) // 2 for a, b in zip(grid.ys, grid.ys[1:])]
    step_x = np.abs(np.diff(m, axis=1)).mean(axis=0)  # mean jump between neighbouring columns
    step_y = np.abs(np.diff(m, axis=0)).mean(axis=1)
    for steps, cuts in ((step_x, cuts_x), (step_y, cuts_y)):
        typical = float(np.median(steps))
        at_cuts = max(float(steps[c - 4:c + 4].max()) for c in cuts)
        assert at_cuts < 3 * typical, (at_cuts, typical)


def test_roi_alignment_and_tiling_together(tmp_path):
    rng = np.random.default_rng(5)
    border = (40, 24)  # the parts sit on a dark background; the ROI cuts them out with a margin

    def framed(img):
        return cv2.copyMakeBorder(img, border[1], 30, border[0], 50, cv2.BORDER_CONSTANT, value=(20, 20, 20))

    golden = tmp_path / "golden"
    golden.mkdir()
    for i in range(8):
        write_png(golden / f"g{i}.png", framed(grid_frame(rng, 6, 2)))  # parts 768x256
    roi = [border[0] - 16, border[1] - 16, 6 * PART + 32, 2 * PART + 32]
    s = settings(preprocess={"roi": roi, "align": {"enabled": True}})
    calibrate(s, golden, tmp_path / "bundle", progress=False)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.preprocess.grid.n_tiles == 8 and bundle.preprocess.work_size == (800, 288)
    pipeline = build_pipeline(bundle, engine_config(max_batch=8, threads=2))
    try:
        spot = (3 * PART + 64 - 12, PART + 64 + 6)
        spotted = with_spot(grid_frame(rng, 6, 2), spot, 5)
        shifted, m = moved(framed(spotted), 4, -3, 0.0)
        (v,) = pipeline.inspect([frame(shifted)])
    finally:
        pipeline.engine.close()
    assert v.kind is VerdictKind.FAIL and v.transform.align is not None
    x, y = m @ np.array([spot[0] + border[0], spot[1] + border[1], 1.0])  # where the spot is in this frame
    assert overlaps(v.regions[0], x - 6, y - 6, x + 6, y + 6), (v.regions, (x, y))


def test_daemon_records_regions_and_heatmaps_of_a_tiled_bundle_in_frame_pixels(tmp_path, tiled_bundle, test_frames):
    ws = make_workspace(tmp_path / "ws", tiled_bundle, extra={"preprocess": {"size": "auto"}})
    daemon = Daemon(ws).start()
    try:
        daemon.wait_ready(timeout=120)
        drop_image(ws.inbox, "good.png", test_frames[0])
        drop_image(ws.inbox, "spot.png", test_frames[1])
        recorded = {r["origin_name"]: r for r in wait_rows(ws, 2, timeout=120, daemon=daemon)}
        assert recorded["good.png"]["verdict"] == "pass", recorded
        fail = recorded["spot.png"]
        assert fail["verdict"] == "fail", fail
        con = sqlite3.connect(f"file:{ws.db}?mode=ro", uri=True)
        try:
            regions = con.execute("SELECT x, y, w, h FROM defect_regions WHERE inspection_id=?",
                                  (fail["id"],)).fetchall()
        finally:
            con.close()
        x, y = SPOT_XY
        assert any(rx <= x + SPOT_R and rx + rw >= x - SPOT_R and ry <= y + SPOT_R and ry + rh >= y - SPOT_R
                   for rx, ry, rw, rh in regions), regions
        heat = cv2.imread(fail["heatmap_path"])
        assert heat is not None and heat.shape[:2] == (384, 768)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()


def test_a_config_that_states_another_geometry_is_refused(tiled_bundle):
    from inspector.errors import BundleError
    from inspector.runtime import check_preprocess_matches

    bundle = load_bundle(tiled_bundle)
    check_preprocess_matches(bundle, settings(preprocess={"size": "auto", "tile": [256, 256]}))
    check_preprocess_matches(bundle, settings(preprocess={"size": [768, 384]}))
    for section, words in (({"size": [256, 256]}, "preprocess size 768x384"),
                           ({"tile": [512, 512]}, "network input 256x256"),
                           ({"tile_overlap": 64}, "tile_overlap 32"),
                           ({"scale": 0.5}, "preprocess scale 1.0")):
        with pytest.raises(BundleError, match=words):
            check_preprocess_matches(bundle, settings(preprocess=section))
    assert json.loads((tiled_bundle / "manifest.json").read_text())["preprocess"]["tile_overlap"] == 32


def test_calibration_summary_and_report_of_a_tiled_bundle(tmp_path, tiled_calibration):
    from calibration.summary import print_summary, write_report

    shutil.copytree(tiled_calibration.bundle_dir, tmp_path / "b")  # the report is written into the bundle
    result = dataclasses.replace(tiled_calibration, bundle_dir=tmp_path / "b",
                                 geometry_notes=["calibration.min_defect_px 4 needs 40 tiles a frame; capped"])
    report = write_report(result, settings(), None)
    near = list((tmp_path / "b" / "report").glob("near-*.png"))
    assert near and cv2.imread(str(near[0])).shape[:2] == (384, 768)  # heatmaps over the whole frame
    out = io.StringIO()
    print_summary(result, report, out=out)
    text = out.getvalue()
    assert "geometry      work 768x384, 8 tiles of 256x256 (4x2, overlap 32 px), scale 1" in text, text
    assert "smallest defect filling a feature cell ~8 frame px" in text
    assert "ms per megapixel of work image (8 network inputs a frame)" in text
    assert "geometry note calibration.min_defect_px 4 needs 40 tiles a frame; capped" in text


@pytest.mark.parametrize("scorer", [
    {"type": "memory_bank", "method": "padim"},
    {"type": "hypersphere", "method": "ocsvm"},
    {"type": "reconstruction", "method": "autoencoder", "autoencoder": {"training": {"epochs": 2}}},
], ids=lambda s: s["method"])
def test_every_scorer_family_scores_tiled_frames(tmp_path, scorer):
    """PaDiM keeps per-position statistics over the stitched work grid; OC-SVM pools the whole
    stitched map; a trained head (the autoencoder here; Deep SVDD's output takes the same path)
    runs per tile inside the engine and its outputs are stitched."""
    rng = np.random.default_rng(8)
    golden = tmp_path / "golden"
    golden.mkdir()
    for i in range(6):
        write_png(golden / f"g{i}.png", grid_frame(rng, 3, 1))  # 384x128: two 256x128 tiles
    calibrate(settings(scorer=scorer), golden, tmp_path / "bundle", progress=False)
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.preprocess.grid.n_tiles == 2 and bundle.manifest.as_dict()["engine"]["input_shape"] == [3, 128, 256]
    pipeline = build_pipeline(bundle, engine_config(max_batch=8, threads=2))
    pipeline.maps_for_passes = True
    try:
        good, bad = pipeline.inspect([frame(grid_frame(rng, 3, 1)),
                                      frame(with_spot(grid_frame(rng, 3, 1), (PART + 70, 72), 7))])
    finally:
        pipeline.engine.close()
    assert np.isfinite([good.score, bad.score]).all()
    # PaDiM must rank the spot above the good frame. Not asked of OC-SVM: fitted on 6 frames, its
    # RBF support is so tight that every unseen frame gets the same score (measured: both
    # 0.1113), and of the autoencoder's head trained 2 epochs; both must still score the tiles.
    if scorer["method"] == "padim":
        assert bad.score > good.score, (good.score, bad.score)
    if scorer["method"] != "ocsvm":
        assert good.pixel_map.shape == bad.pixel_map.shape == (128, 384)
