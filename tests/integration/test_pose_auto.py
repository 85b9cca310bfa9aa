"""preprocess.align.enabled auto (the default, calibration/pose_auto.py): pose normalisation is
tried only when the golden parts turn or move, kept only when they then read as one pose, and the
bundle says what was decided and why. Real calibrations on synthetic screws (64 golden images: the
fixed-pose rule needs 60)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from calibration.calibrate import calibrate
from inspector.bundle import load_bundle
from tests.conftest import small_settings, write_png
from tests.unit.test_pose_align import SIDE, screw

N = 64


def _golden(folder, turned: bool, disc: bool = False):
    rng = np.random.default_rng(3)
    folder.mkdir()
    for i in range(N):
        angle, (cx, cy) = (float(rng.uniform(0, 360)), rng.uniform(50, 78, 2)) if turned else (20.0, (64.0, 64.0))
        img = screw(angle, cx, cy, seed=i)
        if disc:  # a round part moving about: no axis to turn to
            img = np.full((SIDE, SIDE), 200, np.uint8)
            x, y = rng.uniform(28, 100, 2)  # it moves further than the screws: a disc's twins are its neighbours
            cv2.circle(img, (int(x), int(y)), 22, 60, -1)
            img = np.clip(img.astype(np.int16) + rng.integers(-4, 5, img.shape), 0, 255).astype(np.uint8)
        write_png(folder / f"s{i:02d}.png", cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    return folder


def _calibrate(golden, out, summary: list | None = None):
    import io

    from calibration.summary import print_summary

    settings = small_settings(preprocess={"size": [SIDE, SIDE]}, calibration={"holdout": 0.25, "min_images": 4})
    assert settings.preprocess.align.enabled == "auto"  # the default
    result = calibrate(settings, golden, out, progress=False)
    if summary is not None:
        text = io.StringIO()
        print_summary(result, None, out=text)
        summary.append(text.getvalue())
    return load_bundle(out)


def test_turning_elongated_parts_get_pose_normalisation_and_the_bundle_says_why(tmp_path):
    summary = []
    bundle = _calibrate(_golden(tmp_path / "g", turned=True), tmp_path / "b", summary)
    pre, rec = bundle.preprocess, bundle.manifest.preprocess.align_auto
    assert pre.align is not None and pre.align.motion == "pose" and pre.canvas == (SIDE, SIDE)
    assert rec.enabled and rec.twin_ratio < rec.cut <= rec.posed_twin_ratio, rec
    assert rec.reason.startswith("on:")
    assert f"pose          {rec.reason}" in summary[0]


def test_parts_in_one_pose_are_left_as_they_come(tmp_path, monkeypatch):
    import calibration.reference as reference

    def never(*args, **kwargs):
        raise AssertionError("pose normalisation tried on a fixed part")

    monkeypatch.setattr(reference, "golden_pose", never)
    bundle = _calibrate(_golden(tmp_path / "g", turned=False), tmp_path / "b")
    rec = bundle.manifest.preprocess.align_auto
    assert bundle.preprocess.align is None and not rec.enabled and rec.posed_twin_ratio is None
    assert rec.twin_ratio >= rec.cut and "one pose" in rec.reason


def test_a_moving_round_part_falls_back_to_the_frames_as_they_come_without_extracting_twice(tmp_path, monkeypatch):
    import calibration.calibrate as calibrate_module

    extractions = []
    real = calibrate_module.extract_features
    monkeypatch.setattr(calibrate_module, "extract_features", lambda *a, **k: extractions.append(1) or real(*a, **k))
    bundle = _calibrate(_golden(tmp_path / "g", turned=True, disc=True), tmp_path / "b")
    rec = bundle.manifest.preprocess.align_auto
    assert bundle.preprocess.align is None and not rec.enabled
    assert rec.twin_ratio < rec.cut and "elongated" in rec.reason, rec
    assert len(extractions) == 1  # the fallback took the first try's features


def test_a_config_stating_align_auto_runs_a_bundle_either_way(tmp_path):
    from inspector.runtime import check_preprocess_matches
    from inspector.settings import settings_from_dict

    bundle = _calibrate(_golden(tmp_path / "g", turned=True), tmp_path / "b")
    auto = settings_from_dict({"preprocess": {"size": [SIDE, SIDE], "align": {"enabled": "auto"}}}, base_dir=tmp_path)
    check_preprocess_matches(bundle, auto)  # pose chosen by auto: accepted
    off = settings_from_dict({"preprocess": {"size": [SIDE, SIDE], "align": {"enabled": False}}}, base_dir=tmp_path)
    with pytest.raises(Exception, match="align"):
        check_preprocess_matches(bundle, off)


def test_calibrate_auto_decides_pose_for_its_candidates_sharing_both_tries_features(tmp_path, monkeypatch):
    """calibrate --auto on turning parts: every candidate is pose-normalised (as a plain calibrate
    would be), the features of both tries are extracted once for all candidates and the winner,
    and the winner's bundle records the decision."""
    import calibration.calibrate as calibrate_module
    from calibration.auto import Candidate, auto_calibrate
    from inspector.methods.registry import config_for

    extractions = []
    real = calibrate_module.extract_features

    def counted(engine, pre, images, **kwargs):
        extractions.append(pre.spec.align is not None)
        return real(engine, pre, images, **kwargs)

    monkeypatch.setattr(calibrate_module, "extract_features", counted)
    settings = small_settings(preprocess={"size": [SIDE, SIDE]},
                              calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 20})
    padim = settings.model_copy(update={"scorer": config_for(settings.scorer, "padim")})
    said = []
    result, trials = auto_calibrate(settings, _golden(tmp_path / "g", turned=True), tmp_path / "b", progress=False,
                                    candidate_list=[Candidate("patchcore", settings), Candidate("padim", padim)],
                                    say=said.append)
    assert [t.pose for t in trials] == [True, True], said
    assert all("with pose normalisation" in s for s in said if s.startswith("auto: ") and "%" in s), said
    assert sorted(extractions) == [False, True]  # the frames as they come once, pose-normalised once
    bundle = load_bundle(tmp_path / "b")
    assert bundle.preprocess.align is not None and bundle.preprocess.align.motion == "pose"
    assert bundle.manifest.preprocess.align_auto.enabled
    assert all(t["pose_normalised"] for t in bundle.manifest.as_dict()["auto"]["trials"])
