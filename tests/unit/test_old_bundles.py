"""Bundles written before the method contract (tests/fixtures/old_bundles, made by the code of
commit e40e47a) still load through today's manifest and method states, and score identically."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector.bundle import load_bundle
from inspector.errors import BundleError

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "old_bundles"
NAMES = ["patchcore", "patchcore_bf16", "padim", "deep_svdd", "ocsvm", "autoencoder"]


@pytest.mark.parametrize("name", NAMES)
def test_an_old_bundle_loads_and_scores_as_it_did(name):
    bundle = load_bundle(OLD / name)
    with np.load(OLD / name / "expected.npz", allow_pickle=False) as npz:
        expected = {k: npz[k] for k in npz.files}
    outputs = {k[len("output."):]: v for k, v in expected.items() if k.startswith("output.")}
    got = bundle.scorer().score(outputs, (32, 32))
    # the expected scores were written on an AVX-512 CPU: another CPU's BLAS kernels sum in another
    # order and differ in the last bit (seen on an AVX2-only EPYC), so "as it did" is to 1e-6
    close = dict(rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.image_scores, expected["image_scores"], **close)
    if expected["patch_maps"].size:
        np.testing.assert_allclose(got.patch_maps, expected["patch_maps"], **close)
    else:
        assert got.patch_maps is None
    # and the state writes back the arrays it was read from
    for key, value in bundle.state.arrays().items():
        np.testing.assert_array_equal(value, bundle.arrays[key])


def test_old_patchcore_bundles_keep_the_search_they_recorded():
    assert load_bundle(OLD / "patchcore_bf16").state.searcher.name == "bf16"
    assert load_bundle(OLD / "patchcore").state.searcher.name == "fp32"


@pytest.mark.parametrize("name, array", [("padim", "padim_mean"), ("patchcore", "bank_knn_index"),
                                         ("ocsvm", "ocsvm_support"), ("deep_svdd", "head.norm.mean")])
def test_a_missing_array_refuses_the_bundle_in_one_line(tmp_path, name, array):
    copy = tmp_path / name
    shutil.copytree(OLD / name, copy)
    with np.load(copy / "arrays.npz", allow_pickle=False) as npz:
        kept = {k: npz[k] for k in npz.files if k != array}
    np.savez(copy / "arrays.npz", **kept)
    with pytest.raises(BundleError) as info:
        load_bundle(copy, verify_hashes=False)
    msg = str(info.value)
    assert "\n" not in msg and f"'{array}'" in msg and "recalibrate" in msg, msg


def test_an_ill_shaped_array_refuses_the_bundle_in_one_line(tmp_path):
    copy = tmp_path / "padim"
    shutil.copytree(OLD / "padim", copy)
    with np.load(copy / "arrays.npz", allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["padim_inv_cov"] = arrays["padim_inv_cov"][:, :3]
    np.savez(copy / "arrays.npz", **arrays)
    with pytest.raises(BundleError, match=r"'padim_inv_cov' has shape \[16, 3, 5\], expected 16x5x5"):
        load_bundle(copy, verify_hashes=False)
