"""`calibrate --auto`: candidates compared on synthetic defects, the best calibrated in full, the
evidence in the bundle, the summary and the report. Real calibrations of the synthetic demo parts."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from calibration.auto import Candidate, Trial, auto_calibrate, candidates
from inspector.methods.registry import config_for
from tests.conftest import small_settings


def test_default_candidates_are_the_configured_method_then_the_other_memory_banks():
    names = [c.settings.scorer.method for c in candidates(small_settings())]
    assert names == ["patchcore", "padim", "global_context"]
    configured = candidates(small_settings(scorer={"method": "global_context", "global_context": {"grids": [2], "map_grids": [2]}}))
    assert [c.settings.scorer.method for c in configured] == ["global_context", "patchcore", "padim"]
    assert configured[1].settings.scorer.coreset == configured[0].settings.scorer.coreset
    heads = candidates(small_settings(scorer={"type": "hypersphere", "method": "ocsvm"}))
    assert len(heads) == 1  # trained heads are compared only when configured


def test_with_auto_geometry_each_method_is_also_tried_with_the_whole_frame_in_one_tile():
    from inspector.settings import Settings

    found = [(c.settings.scorer.method, c.settings.preprocess.size) for c in candidates(Settings())]
    assert found == [("global_context", "auto"), ("patchcore", "auto"), ("padim", "auto"),
                     ("global_context", (256, 256)), ("patchcore", (256, 256)), ("padim", (256, 256))]


def test_frames_that_fit_one_tile_at_the_auto_geometry_are_not_tried_twice():
    """mvtec_screw's 512x512 frames at min_defect_px 16 are one 256x256 tile at the auto geometry:
    the one-tile candidates would repeat the same calibrations."""
    from inspector.settings import Settings

    one_tile = [(c.settings.scorer.method, c.settings.preprocess.size) for c in candidates(Settings(), [(512, 512)])]
    assert one_tile == [("global_context", "auto"), ("patchcore", "auto"), ("padim", "auto")]
    tiled = candidates(Settings(), [(900, 900, 3)])  # bottle: tiled at the auto geometry
    assert len(tiled) == 6


def test_the_candidate_finding_more_defects_wins_and_its_evidence_is_recorded(tmp_path, golden_dir):
    settings = small_settings(calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 30,
                                           "min_defect_px": 6})
    good = Candidate("patchcore", settings)
    # a blind candidate: a bank of one patch from a 5% share, smoothed flat, finds (almost) nothing
    blind_scorer = settings.scorer.model_copy(update={"coreset": settings.scorer.coreset.model_copy(
        update={"size": 1}), "smoothing_sigma": 0.0})
    blind = Candidate("blind", settings.model_copy(update={"scorer": blind_scorer}))
    said = []
    result, trials = auto_calibrate(settings, golden_dir, tmp_path / "b", progress=False,
                                    candidate_list=[blind, good], say=said.append)
    assert [t.candidate.name for t in trials] == ["blind", "patchcore"]
    assert trials[1].found > trials[0].found
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["auto"]["chosen"] == "patchcore"
    assert [t["name"] for t in manifest["auto"]["trials"]] == ["blind", "patchcore"]
    assert manifest["scorer"]["params"]["bank_size"] > 1  # the winner was calibrated, not the blind one
    assert result.detectability is not None and len(said) == 2


def test_time_bound_skips_the_rest(tmp_path, golden_dir, monkeypatch):
    import calibration.auto as auto

    settings = small_settings(calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 15,
                                           "auto_time_factor": 1.0})
    tried = []

    def fake_evaluate(cand, *a, **k):  # the first one takes all the time the bound allows
        tried.append(cand.name)
        return Trial(cand, 0.5, 0.5, 10, None, seconds=10.0)

    monkeypatch.setattr(auto, "evaluate", fake_evaluate)
    said = []
    auto_calibrate(settings, golden_dir, tmp_path / "b", progress=False, say=said.append)
    assert len(tried) == 1 and any("time bound" in s for s in said)


def test_cli_auto_prints_the_choice_and_writes_it_to_the_report(tmp_path, golden_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"preprocess": {"size": [128, 128]},
                                   "calibration": {"holdout": 0.25, "min_images": 4, "synthetic_defects": 20},
                                   "scorer": {"coreset": {"ratio": 0.05}}}))
    out = tmp_path / "bundle"
    p = subprocess.run([sys.executable, "-m", "inspector.cli", "calibrate", "--golden", str(golden_dir), "--out",
                        str(out), "--config", str(cfg), "--auto", "--quiet"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "auto          chose memory_bank/" in p.stdout
    html = (out / "report.html").read_text()
    assert "Method chosen by calibrate --auto" in html and "padim" in html


def test_a_candidate_that_fails_is_left_out_not_the_whole_choice(tmp_path, golden_dir, monkeypatch):
    import calibration.auto as auto

    settings = small_settings(calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 15})
    real_evaluate = auto.evaluate

    def flaky(cand, *a, **k):
        if cand.settings.scorer.method == "padim":
            raise MemoryError("PaDiM's covariances do not fit")
        return real_evaluate(cand, *a, **k)

    monkeypatch.setattr(auto, "evaluate", flaky)
    said = []
    result, trials = auto_calibrate(settings, golden_dir, tmp_path / "b", progress=False, say=said.append)
    assert [t.candidate.settings.scorer.method for t in trials] == ["patchcore", "global_context"]
    assert any("could not be calibrated" in s and "left out" in s for s in said)
    assert result.manifest.auto["chosen"].startswith("memory_bank/patchcore")


def test_candidates_at_one_geometry_and_the_winner_share_one_feature_extraction(tmp_path, golden_dir, monkeypatch):
    import calibration.calibrate as calibrate_module
    from calibration.calibrate import calibrate

    extracted = []
    real_extract = calibrate_module.extract_features

    def counted(engine, pre, images, **kwargs):
        extracted.append(len(images))
        return real_extract(engine, pre, images, **kwargs)

    monkeypatch.setattr(calibrate_module, "extract_features", counted)
    settings = small_settings(calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 20})
    padim = Candidate("padim", settings.model_copy(update={"scorer": config_for(settings.scorer, "padim")}))
    result, trials = auto_calibrate(settings, golden_dir, tmp_path / "b", progress=False,
                                    candidate_list=[Candidate("patchcore", settings), padim])
    assert len(trials) == 2 and len(extracted) == 1  # two candidates and the winner: one extraction
    # the winner's bundle is what a calibration of its own makes
    chosen = next(t for t in trials if t.candidate.name == result.manifest.as_dict()["auto"]["chosen"])
    alone = calibrate(chosen.candidate.settings, golden_dir, tmp_path / "alone", progress=False)
    assert len(extracted) == 2
    assert alone.image_threshold.value == pytest.approx(result.image_threshold.value, rel=1e-5)  # two engine runs
    assert alone.detectability.to_json()["by_size"] == result.detectability.to_json()["by_size"]


def test_only_the_winners_features_are_kept_for_its_calibration(tmp_path, golden_dir, monkeypatch):
    import calibration.auto as auto
    import calibration.calibrate as calibrate_module
    from calibration.feature_reuse import FeatureReuse

    made, extracted = [], []
    real_extract = calibrate_module.extract_features

    class Spy(FeatureReuse):
        def __init__(self):
            super().__init__()
            made.append(self)

    def counted(engine, pre, images, **kwargs):
        extracted.append(pre.spec.width)
        return real_extract(engine, pre, images, **kwargs)

    monkeypatch.setattr(auto, "FeatureReuse", Spy)
    monkeypatch.setattr(calibrate_module, "extract_features", counted)
    cal = {"holdout": 0.25, "min_images": 4, "synthetic_defects": 20}
    big, small = small_settings(calibration=cal), small_settings(calibration=cal, preprocess={"size": [96, 96]})
    result, trials = auto_calibrate(big, golden_dir, tmp_path / "b", progress=False,
                                    candidate_list=[Candidate("big", big), Candidate("small", small)])
    assert sorted(extracted) == [96, 128]  # one extraction per geometry; the winner's calibration reused its own
    best = next(t for t in trials if t.candidate.name == result.manifest.as_dict()["auto"]["chosen"])
    assert made[0].keys() == list(best.features_keys) and len(best.features_keys) == 1
