"""global_context's aligned-neighbour map (inspector/methods/aligned.py): a part whose every patch is
normal somewhere but not where it is (a label missing) lights up where it is wrong, which
PatchCore's map does not; the window search is the exact one; the bundle round trip; by default
decided by the fixed-pose rule, which needs 60 golden images (off below)."""
import numpy as np
import pytest

from calibration.methods import NoProgress
from calibration.methods import global_context as gc_fit
from calibration.methods.aligned import farthest_images
from inspector.methods import aligned
from inspector.methods import global_context as gc
from inspector.methods.base import StateInvalid
from tests.conftest import small_settings
from tests.unit._scorer_data import scorer_of

GC = {"type": "memory_bank", "method": "global_context", "coreset": {"size": 400}}
ON = {"aligned_map": {"enabled": True, "images": 30, "k": 3, "radius": 1, "image_weight": 0.0}}  # the map only


def _parts(rng, n, missing=False):
    """[n, 8, 8, 8] features of an aligned part: rows 2-5 of the right half are a label
    (prototype b), everything else glass (prototype a). ``missing``: the label gone, glass there
    (a patch that is normal anywhere else on the part)."""
    a, b = np.eye(8)[0] * 3, np.eye(8)[1] * 3
    f = rng.normal(scale=0.3, size=(n, 8, 8, 8)) + a[None, :, None, None]
    if not missing:
        f[:, :, 2:6, 4:] += (b - a)[None, :, None, None]
    return f.astype(np.float32)


def _fit(golden, **gc):
    config = small_settings(scorer={**GC, "global_context": gc} if gc else GC).scorer
    return gc_fit.fit(golden, config, 0, NoProgress())


def _score(state, feats):
    from inspector.methods.registry import Scorer, method_of

    return Scorer(method_of("global_context"), state).score({"features": feats}, (64, 64))


def test_a_missing_label_lights_up_where_it_is_missing_only_with_the_aligned_map():
    rng = np.random.default_rng(0)
    golden, good, wrong = _parts(rng, 40), _parts(rng, 8), _parts(rng, 1, missing=True)
    test = np.concatenate([good, wrong])
    old, new = _fit(golden), _fit(golden, **ON)
    for state, lit in ((old, False), (new, True)):
        m = (_score(state, test).patch_maps - state.params.local_mean) / state.params.local_std  # golden z
        label = m[-1, 2:6, 4:].mean()
        # the missing label against the rest of its own part and against good parts' label area
        above = bool(label > m[-1, :2].mean() + 3.0 and label > m[:-1, 2:6, 4:].max() + 1.0)
        assert above is lit
    # the image score is global_context's either way: the aligned map changes the map only
    np.testing.assert_array_equal(_score(old, test).image_scores, _score(new, test).image_scores)


def test_image_weight_adds_the_aligned_maps_largest_z_to_the_image_score():
    """A missing label is a part wrong where each patch is normal elsewhere: with image_weight the
    aligned map's evidence reaches the verdict, not only the map."""
    rng = np.random.default_rng(3)
    golden, good, wrong = _parts(rng, 40), _parts(rng, 8), _parts(rng, 1, missing=True)
    test = np.concatenate([good, wrong])
    plain = _fit(golden, **ON)
    weighted = _fit(golden, aligned_map={**ON["aligned_map"], "image_weight": 2.0})
    assert weighted.params.aligned.image_weight == 2.0
    z = gc.aligned_map(weighted, test)
    want = _score(plain, test).image_scores + 2.0 * z.reshape(len(z), -1).max(axis=1)
    got = _score(weighted, test).image_scores
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    gap = lambda s: s[-1] - s[:-1].max()  # noqa: E731  the missing label above the best good part
    assert gap(got) > gap(_score(plain, test).image_scores) + 1.0


def test_fusion_max_keeps_patchcore_where_it_is_larger():
    rng = np.random.default_rng(1)
    golden, test = _parts(rng, 30), _parts(rng, 3, missing=True)
    test[0, :, 0, 0] += 20.0  # a patch unlike any golden one: PatchCore's map is high there
    pc = _score(_fit(golden), test).patch_maps
    rep = _score(_fit(golden, aligned_map={**ON["aligned_map"], "fusion": "replace"}), test).patch_maps
    mx = _score(_fit(golden, aligned_map={**ON["aligned_map"], "fusion": "max"}), test).patch_maps
    np.testing.assert_allclose(mx, np.maximum(pc, rep), rtol=1e-5, atol=1e-4)


def test_window_distances_are_the_exact_nearest_within_the_window():
    rng = np.random.default_rng(2)
    q = rng.normal(size=(6, 7, 5)).astype(np.float32)
    g = rng.normal(size=(3, 6, 7, 5)).astype(np.float32)
    for r in (0, 1, 2):
        got = aligned.window_distances(q, g, r)
        want = np.empty((6, 7))
        for y in range(6):
            for x in range(7):
                c = g[:, max(0, y - r):y + r + 1, max(0, x - r):x + r + 1].reshape(-1, 5)
                want[y, x] = np.sqrt(((c - q[y, x]) ** 2).sum(1)).min()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_nearest_images_leave_out_the_excluded_one_and_k_center_keeps_every_cluster():
    lay = np.array([[0.0], [0.1], [5.0], [5.2], [9.0]])
    nb = aligned.nearest_images(np.array([[0.0], [5.1]]), lay, 2, exclude=np.array([0, -1]))
    assert nb.tolist() == [[1, 2], [2, 3]]
    assert set(farthest_images(lay, 3).tolist()) & {0, 1} and set(farthest_images(lay, 3).tolist()) & {2, 3}
    assert 4 in farthest_images(lay, 3)


def test_batch_equals_one_by_one_and_the_bundle_round_trip():
    rng = np.random.default_rng(3)
    golden, test = _parts(rng, 20), np.concatenate([_parts(rng, 2), _parts(rng, 1, missing=True)])
    state = _fit(golden, **ON)
    arrays = state.arrays()
    assert arrays["gc_aligned_golden"].dtype == np.float16 and arrays["gc_aligned_golden"].shape == (20, 8, 8, 8)
    whole = _score(state, test)
    for i in range(len(test)):
        np.testing.assert_allclose(_score(state, test[i:i + 1]).patch_maps[0], whole.patch_maps[i], rtol=1e-5, atol=1e-4)
    params = state.params.model_dump(mode="json")
    back = scorer_of(params, arrays).score({"features": test}, (64, 64))
    np.testing.assert_array_equal(back.patch_maps, whole.patch_maps)
    with pytest.raises(StateInvalid, match="gc_aligned_golden"):
        scorer_of(params, {k: v for k, v in arrays.items() if k != "gc_aligned_golden"})
    with pytest.raises(StateInvalid, match="gc_aligned_golden"):
        scorer_of(params, {**arrays, "gc_aligned_golden": arrays["gc_aligned_golden"][:, :4]})
    # projected on the golden patches' top principal directions: 4 of the 8 dims kept, same behaviour
    small = _fit(golden, aligned_map={**ON["aligned_map"], "dims": 4})
    arr4 = small.arrays()
    assert arr4["gc_aligned_golden"].shape == (20, 4, 8, 8) and arr4["gc_aligned_basis"].shape == (8, 4)
    m4 = _score(small, test).patch_maps
    z4 = (m4 - small.params.local_mean) / small.params.local_std
    assert z4[-1, 2:6, 4:].mean() > z4[:-1, 2:6, 4:].max() + 1.0  # the missing label still lights up
    p4 = small.params.model_dump(mode="json")
    np.testing.assert_array_equal(scorer_of(p4, arr4).score({"features": test}, (64, 64)).patch_maps, m4)
    with pytest.raises(StateInvalid, match="gc_aligned_basis"):
        scorer_of(p4, {k: v for k, v in arr4.items() if k != "gc_aligned_basis"})
    # a bundle from before the option: no 'aligned' in its params, no array, PatchCore's map
    off = _fit(golden)
    old = {k: v for k, v in off.params.model_dump(mode="json").items() if k != "aligned"}
    assert "gc_aligned_golden" not in off.arrays()
    np.testing.assert_array_equal(scorer_of(old, off.arrays()).score({"features": test}, (64, 64)).patch_maps,
                                  _score(off, test).patch_maps)


def test_augmented_copies_are_left_out_with_their_original_when_golden_images_are_scored():
    from calibration.methods.aligned import fit_aligned
    from inspector.methods.global_context import AlignedConfig

    rng = np.random.default_rng(4)
    originals = _parts(rng, 12)
    copies = np.repeat(originals, 3, axis=0)  # each image three times, as exact augmented copies
    member = np.repeat(np.arange(12), 3)
    config = AlignedConfig(enabled=True, k=3)
    plain = fit_aligned(originals, config, 100, 0)[2].mean
    grouped = fit_aligned(copies, config, 100, 0, member)[2].mean
    naive = fit_aligned(copies, config, 100, 0)[2].mean  # each row only without itself: its copies match
    assert grouped == pytest.approx(plain, rel=0.2) and naive < 0.1 * plain
