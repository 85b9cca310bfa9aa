"""global_context's ``aligned_map: {enabled: auto}`` (calibration/methods/pose.py): from the golden
images alone, calibration turns the aligned map on for a part in a fixture and off for the same
part turned at random, records why in the bundle's params, decides once for both of calibration's
fits, and leaves ``enabled: true/false`` as they were."""
import functools

import cv2
import numpy as np
import pytest
import yaml

from calibration.methods import NoProgress, resolve_config
from calibration.methods import global_context as gc_fit
from calibration.methods import pose
from inspector.methods import global_context as gc
from tests.conftest import TEST_SIZE, small_settings
from tests.unit._scorer_data import features, scorer_of

N = pose.SUBSET + 4  # golden images: enough for the rule


def _turned(image: np.ndarray, rng) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), float(rng.uniform(-180.0, 180.0)), 1.0)
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=1)
def _golden():
    """Backbone features of N synthetic plates in a fixture (make_part: +-1.5 px, ~1 degree of
    jitter) and of the same plates each turned by a random angle."""
    from calibration.synthetic import make_part

    rng = np.random.default_rng(5)
    fixed = [make_part(rng, size=TEST_SIZE) for _ in range(N)]
    turned = [_turned(im, rng) for im in fixed]
    return features(fixed), features(turned)


def _config(**aligned):
    return small_settings(scorer={"type": "memory_bank", "method": "global_context", "coreset": {"size": 200},
                                  "global_context": {"aligned_map": {"images": 30, "k": 3, "dims": 8,
                                                                     **aligned}}}).scorer


def test_the_rule_turns_the_map_on_for_a_fixed_part_and_off_for_a_turning_one():
    fixed, turned = _golden()
    on, off = pose.decide(fixed, 0.48, seed=0), pose.decide(turned, 0.48, seed=0)
    assert on.enabled and not off.enabled
    assert on.twin_ratio >= 0.48 > off.twin_ratio and on.images == N
    assert "fixed pose" in on.reason and "turns" in off.reason
    # a decision, not a coin: other seeds' subsets agree
    assert all(pose.decide(fixed, 0.48, s).enabled and not pose.decide(turned, 0.48, s).enabled for s in (1, 2))


def test_auto_fit_records_the_decision_and_builds_the_map_only_when_on():
    fixed, turned = _golden()
    config = _config(enabled="auto")
    for golden, want in ((fixed, True), (turned, False)):
        state = gc_fit.fit(golden, config, 0, NoProgress())
        d = state.params.aligned_auto
        assert d is not None and d.enabled is want and d.cut == 0.48
        assert (state.params.aligned is not None) is want and ("gc_aligned_golden" in state.arrays()) is want
        back = scorer_of(state.params.model_dump(mode="json"), state.arrays())  # the bundle round trip
        assert back.state.params.aligned_auto == d
    # true and false stay what they were: no decision recorded
    for enabled in (True, False):
        state = gc_fit.fit(turned[:20], _config(enabled=enabled), 0, NoProgress())
        assert state.params.aligned_auto is None and (state.params.aligned is not None) is enabled


def test_too_few_golden_images_leave_it_off_and_say_why():
    fixed, _ = _golden()
    d = pose.decide(fixed[:20], 0.48, 0)
    assert not d.enabled and d.twin_ratio is None and d.images == 20 and "needs 60" in d.reason
    # augmented copies are not more images: the rule counts originals (a copy is its original's twin)
    member = np.repeat(np.arange(20), 4)
    d = pose.decide(np.repeat(fixed[:20], 4, axis=0), 0.48, 0, member)
    assert not d.enabled and d.images == 20


def test_resolved_once_both_fits_score_alike_and_a_hand_set_decision_is_refused(monkeypatch):
    fixed, _ = _golden()
    resolved = resolve_config(_config(enabled="auto"), fixed, 0)
    a = resolved.global_context.aligned_map
    assert a.enabled is True and a.decision.enabled is True
    calls = []
    monkeypatch.setattr(pose, "decide", lambda *args, **kw: calls.append(1))
    gc_fit.fit(fixed[:40], resolved, 0, NoProgress())  # a fit on a split: no second decision
    assert calls == []
    assert resolve_config(_config(enabled=False), fixed, 0).global_context.aligned_map.decision is None
    with pytest.raises(ValueError, match="decision"):
        gc.AlignedConfig.model_validate({"enabled": False, "decision": a.decision.model_dump()})


def test_the_default_scorer_leaves_the_aligned_map_to_the_rule_with_its_image_term():
    from inspector.settings import Settings

    a = Settings().scorer.global_context.aligned_map
    assert (a.enabled, a.image_weight, a.dims) == ("auto", 1.0, 64)


def test_a_config_file_cannot_write_the_rules_decision_even_one_that_agrees(tmp_path):
    # the decision is calibration's record of what enabled: auto found; a hand-written one (even
    # one that agrees with enabled) would put a twin ratio in the bundle that no rule measured
    from inspector.errors import ConfigError
    from inspector.settings import load_settings

    fixed, _ = _golden()
    d = resolve_config(_config(enabled="auto"), fixed, 0).global_context.aligned_map.decision
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"scorer": {"type": "memory_bank", "method": "global_context", "global_context": {
        "aligned_map": {"enabled": True, "decision": d.model_dump()}}}}))
    with pytest.raises(ConfigError, match="decision.*calibration"):
        load_settings(cfg)
