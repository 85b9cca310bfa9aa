"""The aligned map's coarse half (``aligned_map.coarse_dims``): the pixel map is the mean of the
aligned z-map on all ``dims`` principal directions and on the first ``coarse_dims`` of them, each in
its own golden z-units, so a band of other texture (different in the texture's coarse character,
not its grain) lights up beside what the fine map finds. The image term is unchanged."""
import numpy as np

from calibration.methods import NoProgress
from calibration.methods import global_context as gc_fit
from inspector.methods import aligned
from tests.conftest import small_settings
from tests.unit._scorer_data import scorer_of

GC = {"type": "memory_bank", "method": "global_context", "coreset": {"size": 400}}
ON = {"enabled": True, "images": 40, "k": 3, "radius": 1, "image_weight": 1.0, "dims": 6, "trim": 4}


def _textures(rng, n, band=False):
    """[n, 12, 8, 8]: fine grain in every channel; ``band``: rows 3-4 shifted along the golden
    patches' main direction of variation, by a step no golden tile takes there."""
    level = rng.normal(scale=2.0, size=(n, 1, 1, 1))  # tiles differ most by their level
    f = rng.normal(scale=0.5, size=(n, 12, 8, 8)) + level * np.eye(12)[0][None, :, None, None]
    if band:
        f[:, 0, 3:5] += 4.0
    return f.astype(np.float32)


def _fit(golden, **over):
    cfg = small_settings(scorer={**GC, "global_context": {"aligned_map": {**ON, **over}}}).scorer
    state = gc_fit.fit(golden, cfg, 0, NoProgress())
    return state, scorer_of(state.params.model_dump(mode="json"), state.arrays())


def test_the_map_is_the_mean_of_the_fine_and_the_coarse_z_maps():
    rng = np.random.default_rng(0)
    golden, test = _textures(rng, 40), np.concatenate([_textures(rng, 3), _textures(rng, 1, band=True)])
    state, scorer = _fit(golden, coarse_dims=2)
    a = state.params.aligned
    assert a.coarse_dims == 2 and a.coarse_std > 0
    got = scorer.score({"features": test}, (64, 64))
    proj = aligned.project(test, state.aligned_mean, state.aligned_basis)
    boxes = state.aligned_boxes

    def z(feats, golden_feats, mean, std):
        lay = aligned.layouts(golden_feats, boxes)
        d = aligned.aligned_maps(feats, golden_feats, lay, boxes, a.k, a.radius,
                                 golden_sq=aligned.region_sq(lay, len(boxes)), trim=a.trim)
        return (d - mean) / std

    fine = z(proj, state.aligned_golden, a.mean, a.std)
    coarse = z(np.ascontiguousarray(proj[:, :2]), state.aligned_golden[:, :2], a.coarse_mean, a.coarse_std)
    want = state.params.local_mean + state.params.local_std * (fine + coarse) / 2
    np.testing.assert_allclose(got.patch_maps, want, rtol=1e-4, atol=1e-4)
    _, quarter = _fit(golden, coarse_dims=2, coarse_weight=0.25)
    want = state.params.local_mean + state.params.local_std * (0.75 * fine + 0.25 * coarse)
    np.testing.assert_allclose(quarter.score({"features": test}, (64, 64)).patch_maps, want, rtol=1e-4, atol=1e-4)
    _, off = _fit(golden, coarse_dims=0)
    np.testing.assert_array_equal(got.image_scores, off.score({"features": test}, (64, 64)).image_scores)


def test_coarse_dims_is_on_by_default_and_off_without_principal_directions():
    rng = np.random.default_rng(1)
    golden = _textures(rng, 40)
    state, _ = _fit(golden)
    assert state.params.aligned.coarse_dims == 0  # the default, 8, is not below these tests' dims 6
    state, _ = _fit(golden, dims=10)  # the default coarse_dims, 8, is a prefix of 10
    assert state.params.aligned.coarse_dims == 8
    state, _ = _fit(golden, dims=None)  # raw features have no order to take a prefix of
    assert state.params.aligned.coarse_dims == 0


def test_a_bundle_from_before_coarse_scores_with_the_fine_map_only():
    rng = np.random.default_rng(2)
    golden, test = _textures(rng, 30), _textures(rng, 2)
    state, _ = _fit(golden, coarse_dims=0)
    params = state.params.model_dump(mode="json")
    for key in ("coarse_dims", "coarse_mean", "coarse_std"):
        params["aligned"].pop(key, None)
    old = scorer_of(params, state.arrays())
    assert old.state.params.aligned.coarse_dims == 0
    np.testing.assert_array_equal(old.score({"features": test}, (64, 64)).patch_maps,
                                  scorer_of(state.params.model_dump(mode="json"), state.arrays())
                                  .score({"features": test}, (64, 64)).patch_maps)
