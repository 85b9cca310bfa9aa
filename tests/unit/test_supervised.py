"""Supervised (classifier + PatchCore): trained on golden parts vs scratches and spots, it ranks a
seen defect kind above every good part, a kind it never saw (missing hole) still fails on
PatchCore's distance; no defects is refused in one line; batch == one-by-one; bundle round trip."""
import functools

import numpy as np
import pytest

from inspector.errors import InspectorError
from tests.conftest import TEST_SIZE, small_settings
from tests.unit._scorer_data import data, features, scorer_of

TRAIN = {"epochs": 60, "batch_size": 4, "lr": 0.003, "patience": 60}


def _settings():
    return small_settings(scorer={"type": "supervised", "coreset": {"ratio": 0.05},
                                  "classifier": {"hidden": 16, "training": TRAIN}})


@functools.lru_cache(maxsize=1)
def _parts():
    """(defect features [8, D, h, w]: 4 scratches, 4 spots; test features: 6 good, 3 scratches,
    3 missing holes; labels 0 good, 1 seen kind, 2 unseen kind)."""
    from calibration.synthetic import make_part

    rng = np.random.default_rng(5)
    train = [make_part(rng, size=TEST_SIZE, defect=d) for d in ("scratch", "spot") for _ in range(4)]
    test = [make_part(rng, size=TEST_SIZE, defect=d) for d in ("scratch", "missing_hole") for _ in range(3)]
    return features(train), np.concatenate([data()[1][:6], features(test)]), np.array([0] * 6 + [1] * 3 + [2] * 3)


@functools.lru_cache(maxsize=1)
def _fit():
    from calibration.methods import NoProgress, fitter

    state = fitter("supervised")(data()[0], _settings().scorer, 0, NoProgress(), defects=_parts()[0])
    return state.params.model_dump(mode="json"), state.arrays()


def test_seen_kind_above_every_good_part_and_unseen_kind_still_fails():
    params, arrays = _fit()
    _, test, labels = _parts()
    sm = scorer_of(params, arrays).score({"features": test}, (TEST_SIZE, TEST_SIZE))
    good_max = sm.image_scores[labels == 0].max()
    assert sm.image_scores[labels == 1].min() > good_max
    assert sm.image_scores[labels == 2].min() > good_max
    assert params["defect_images"] == 8 and params["golden_images"] == 16
    assert params["training"]["epochs_run"] >= 1 and params["pc_scale"] > 0


def test_classifier_separates_seen_kinds_that_patchcore_alone_ranks_lower():
    """The classifier's share: on the seen kind, the combined margin over good parts is larger
    than PatchCore's alone (both in units of pc_scale)."""
    from inspector.methods import patchcore, supervised

    params, arrays = _fit()
    state = scorer_of(params, arrays).state
    _, test, labels = _parts()
    dist = patchcore.patch_scores(state.patchcore, test)[0].reshape(len(test), -1).max(1) / state.params.pc_scale
    prob = 1 / (1 + np.exp(-supervised.image_logits(supervised.patch_logits(state.classifier, test), 4)))
    assert prob[labels == 1].min() > 0.5 > prob[labels == 0].max()
    combined = dist + prob
    assert (combined[labels == 1].min() - combined[labels == 0].max()) > (dist[labels == 1].min() - dist[labels == 0].max())


def test_without_defects_it_refuses_in_one_line():
    from calibration.methods import NoProgress, fitter

    with pytest.raises(InspectorError) as err:
        fitter("supervised")(data()[0], _settings().scorer, 0, NoProgress())
    assert "--defects DIR" in str(err.value) and "\n" not in str(err.value)


def test_batch_scores_equal_one_by_one_and_round_trip():
    params, arrays = _fit()
    test = _parts()[1]
    scorer = scorer_of(params, arrays)
    whole = scorer.score({"features": test}, (TEST_SIZE, TEST_SIZE))
    for i in range(len(test)):
        one = scorer.score({"features": test[i:i + 1]}, (TEST_SIZE, TEST_SIZE))
        np.testing.assert_allclose(one.image_scores[0], whole.image_scores[i], rtol=1e-5)
        np.testing.assert_allclose(one.patch_maps[0], whole.patch_maps[i], rtol=1e-5, atol=1e-6)
    again = scorer_of(params, {k: v.copy() for k, v in scorer.state.arrays().items()})
    np.testing.assert_array_equal(again.score({"features": test}, (TEST_SIZE, TEST_SIZE)).image_scores,
                                  whole.image_scores)


def test_ill_shaped_classifier_is_refused():
    from inspector.methods.base import StateInvalid

    params, arrays = _fit()
    bad = {**arrays, "supervised_w2": arrays["supervised_w2"][:-1]}
    with pytest.raises(StateInvalid, match="supervised_w2"):
        scorer_of(params, bad)
    with pytest.raises(StateInvalid, match="supervised_b1"):
        scorer_of(params, {k: v for k, v in arrays.items() if k != "supervised_b1"})


def test_calibrate_reads_the_defects_folder_once(golden_dir, part_images, tmp_path, monkeypatch):
    """The --defects images train the classifier and give its escape rate: one read serves both."""
    from calibration import heldout
    from calibration.calibrate import calibrate
    from tests.conftest import write_png

    defects = tmp_path / "defects"
    defects.mkdir()
    for i, kind in enumerate(["scratch", "spot"] * 3):
        write_png(defects / f"d{i}.png", part_images(kind))
    reads = []
    real_read = heldout.read_golden
    monkeypatch.setattr(heldout, "read_golden", lambda folder, **kw: reads.append(str(folder)) or real_read(folder, **kw))
    settings = small_settings(scorer={"type": "supervised", "coreset": {"ratio": 0.05},
                                      "classifier": {"hidden": 8, "training": {"epochs": 3, "batch_size": 4}}},
                              calibration={"holdout": 0.25, "min_images": 4, "synthetic_defects": 0})
    result = calibrate(settings, golden_dir, tmp_path / "b", defects_dir=defects, progress=False)
    assert reads == [str(defects)]
    assert result.detectability.real.n == 6  # the escape rate on them still measured
