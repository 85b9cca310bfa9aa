"""patch_rows: the same rows, in the asked order, as indexing every patch after a full transpose."""
import numpy as np

from calibration.methods.patches import patch_rows


def test_rows_match_the_transposed_patches_in_any_order_and_dtype():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(7, 5, 3, 4)).astype(np.float32)
    every = feats.transpose(0, 2, 3, 1).reshape(-1, 5)
    rows = rng.choice(len(every), 40, replace=False)  # unsorted, images skipped and repeated
    np.testing.assert_array_equal(patch_rows(feats, rows), every[rows])
    np.testing.assert_array_equal(patch_rows(feats, np.sort(rows), np.float64), every[np.sort(rows)].astype(np.float64))
    assert patch_rows(feats, np.array([], np.int64)).shape == (0, 5)
    only_last = np.arange(6 * 12, 7 * 12)[::-1]
    np.testing.assert_array_equal(patch_rows(feats, only_last), every[only_last])
