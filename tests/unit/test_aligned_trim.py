"""The aligned map's ``trim`` (inspector/methods/aligned.py): the map's references are picked by a
frame's layout without the regions where it differs most, so a defect that makes the frame look
like another golden variant (a missing label: like the variant without one) does not pick that
variant as its references and go dark. The image term keeps the whole layout's references: the
image score is the same with or without trim."""
import numpy as np
import pytest

from calibration.methods import NoProgress
from calibration.methods import global_context as gc_fit
from inspector.methods import aligned
from tests.conftest import small_settings
from tests.unit._scorer_data import scorer_of

GC = {"type": "memory_bank", "method": "global_context", "coreset": {"size": 400}}


def test_trimmed_distance_is_the_sum_without_the_regions_that_differ_most():
    rng = np.random.default_rng(0)
    q, g = rng.normal(size=(3, 4 * 5)), rng.normal(size=(6, 4 * 5))
    per_region = ((q.reshape(3, 1, 4, 5) - g.reshape(1, 6, 4, 5)) ** 2).sum(-1)  # [N, M, R]
    for trim in (1, 3):
        want = np.sort(per_region, axis=2)[:, :, :4 - trim].sum(2)
        np.testing.assert_allclose(aligned.trimmed_distances(q, g, 4, trim), want, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(aligned.trimmed_distances(q, g, 4, trim, aligned.region_sq(g, 4)), want,
                                   rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="trim"):
        aligned.nearest_images(q, g, 2, trim=4, regions=4)


def _parts(rng, n, label=True, shade=0.0):
    """[n, 8, 8, 8] features: glass (prototype a, shifted by ``shade`` along another axis) with a
    label (prototype b) at rows 2-5 of the right half, or glass there too (no label)."""
    a = np.eye(8)[0] * 3 + np.eye(8)[2] * shade
    f = rng.normal(scale=0.3, size=(n, 8, 8, 8)) + a[None, :, None, None]
    if label:
        f[:, :, 2:6, 4:] += (np.eye(8)[1] * 3 - a)[None, :, None, None]
    return f.astype(np.float32)


def test_a_missing_label_keeps_its_own_variant_as_references_only_with_trim():
    rng = np.random.default_rng(1)
    # two golden variants: labelled bottles, and unlabelled ones of a slightly other glass
    golden = np.concatenate([_parts(rng, 20), _parts(rng, 20, label=False, shade=1.0)])
    good, wrong = _parts(rng, 4), _parts(rng, 1, label=False)  # a labelled bottle that lost its label
    test = np.concatenate([good, wrong])
    lit, image = {}, {}
    for trim in (0, 4):  # the label covers 4 of the layout's 16 regions
        on = {"enabled": True, "images": 40, "k": 3, "radius": 1, "image_weight": 1.0, "trim": trim}
        state = gc_fit.fit(golden, small_settings(scorer={**GC, "global_context": {"aligned_map": on}}).scorer,
                           0, NoProgress())
        assert state.params.aligned.trim == trim
        maps = scorer_of(state.params.model_dump(mode="json"), state.arrays()).score({"features": test}, (64, 64))
        z = (maps.patch_maps - state.params.local_mean) / state.params.local_std
        lit[trim] = float(z[-1, 2:6, 4:].mean() - z[-1, :, :4].mean())  # the missing label over its own glass
        image[trim] = maps.image_scores
    # all regions: the frame's nearest golden images are the unlabelled variant, the label area
    # matches them and the map is flat; trimmed: its own variant, the missing label lights up
    assert lit[0] < 1.0 and lit[4] > 3.0, lit
    np.testing.assert_array_equal(image[0], image[4])  # the image term's references: the whole layout's


def test_the_default_picks_the_maps_references_without_the_regions_that_differ_most():
    rng = np.random.default_rng(1)
    golden = np.concatenate([_parts(rng, 20), _parts(rng, 20, label=False, shade=1.0)])
    test = np.concatenate([_parts(rng, 4), _parts(rng, 1, label=False)])
    on = {"enabled": True, "images": 40, "k": 3, "radius": 1, "image_weight": 1.0}  # trim: the default
    state = gc_fit.fit(golden, small_settings(scorer={**GC, "global_context": {"aligned_map": on}}).scorer,
                       0, NoProgress())
    maps = scorer_of(state.params.model_dump(mode="json"), state.arrays()).score({"features": test}, (64, 64))
    z = (maps.patch_maps - state.params.local_mean) / state.params.local_std
    assert float(z[-1, 2:6, 4:].mean() - z[-1, :, :4].mean()) > 3.0  # the missing label lights up


def test_a_bundle_from_before_trim_scores_with_all_regions():
    rng = np.random.default_rng(2)
    on = {"enabled": True, "images": 20, "k": 3, "radius": 1, "image_weight": 0.0, "trim": 0}
    state = gc_fit.fit(_parts(rng, 20), small_settings(scorer={**GC, "global_context": {"aligned_map": on}}).scorer,
                       0, NoProgress())
    params = state.params.model_dump(mode="json")
    del params["aligned"]["trim"]
    test = _parts(rng, 2)
    old = scorer_of(params, state.arrays()).score({"features": test}, (64, 64))
    assert scorer_of(params, state.arrays()).state.params.aligned.trim == 0
    np.testing.assert_array_equal(old.patch_maps, scorer_of(state.params.model_dump(mode="json"), state.arrays())
                                  .score({"features": test}, (64, 64)).patch_maps)


def test_the_trimmed_references_are_searched_only_when_a_map_is_asked_for(monkeypatch):
    # the daemon draws maps for fails only: a pass must not pay for the map's second set of references
    rng = np.random.default_rng(4)
    golden = np.concatenate([_parts(rng, 20), _parts(rng, 20, label=False, shade=1.0)])
    test = np.concatenate([_parts(rng, 2), _parts(rng, 1, label=False)])
    on = {"enabled": True, "images": 40, "k": 3, "radius": 1, "image_weight": 1.0, "trim": 4}
    state = gc_fit.fit(golden, small_settings(scorer={**GC, "global_context": {"aligned_map": on}}).scorer,
                       0, NoProgress())
    scorer = scorer_of(state.params.model_dump(mode="json"), state.arrays())
    eager = scorer.score({"features": test}, (64, 64))
    eager_maps, eager_image = eager.patch_maps.copy(), eager.image_scores.copy()
    trimmed_searches = []
    real = aligned.nearest_images

    def counting(*args, **kwargs):
        trimmed_searches.append(kwargs.get("trim", args[5] if len(args) > 5 else 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(aligned, "nearest_images", counting)
    lazy = scorer.score({"features": test}, (64, 64))
    np.testing.assert_array_equal(lazy.image_scores, eager_image)
    assert 4 not in trimmed_searches  # image scores alone: the whole layout's references only
    np.testing.assert_allclose(lazy.patch_maps, eager_maps, rtol=1e-5, atol=1e-5)
    assert trimmed_searches.count(4) == 1  # the map, once asked for, is made once
    lazy.pixel_map(0), lazy.pixel_map(2)
    assert trimmed_searches.count(4) == 1
    one = scorer.score({"features": test}, (64, 64))  # a fail among passes: its own frame's map only
    searched_rows = []
    real_maps = aligned.aligned_maps
    monkeypatch.setattr(aligned, "aligned_maps", lambda feats, *a, **k: searched_rows.append(len(feats))
                        or real_maps(feats, *a, **k))
    np.testing.assert_allclose(one.patch_map(2), eager_maps[2], rtol=1e-5, atol=1e-5)
    assert searched_rows and set(searched_rows) == {1}
