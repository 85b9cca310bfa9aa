"""A twin-free view of an MVTec-layout dataset: train/good without the golden images that are
re-shots of a test image, so that the test set's good frames are parts the golden set never saw.

magnetic_tile's test/good frames are re-shots of training tiles (docs/BENCHMARKS.md, "pooled pixel
AUROC"): a method that compares a frame with its nearest golden images finds the very tile and
scores it low, which flatters the good side of every AUROC. This writes a folder (give one outside
the repository: the data's licence) whose test/ and ground_truth/ link to the dataset's and whose
train/good holds copies of the golden images (calibration refuses linked image files) less every
one that is a twin of some test image, so that

    inspector bench --dataset /tmp/magnetic_twin_free

measures the line as it would run on new tiles.

A twin: the golden image's layout (the patch features average-pooled to a GRIDxGRID grid) lies
nearer to the test image's than TWIN times the test image's 10th nearest golden layout (the
statistic of that section; a golden image's own re-shots in the training set are its twins too).
The features come from a feature cache of the dataset (benchmarks/feature_cache.py), whose train
array is train/good in file order and whose test array is in mvtec_test_set order:

    python benchmarks/twin_free_split.py --dataset ../shared/data/magnetic_tile \
        --cache /work/featcache/magnetic_256.npz --out /tmp/magnetic_twin_free
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import mvtec_test_set  # noqa: E402
from calibration.golden import list_images  # noqa: E402

TWIN = 0.8
GRID = 4


def layouts(feats: np.ndarray) -> np.ndarray:
    """float64 [N, D * GRID * GRID]: each image's features averaged over a GRIDxGRID grid of cells."""
    n, d, h, w = feats.shape
    ys, xs = np.linspace(0, h, GRID + 1).astype(int), np.linspace(0, w, GRID + 1).astype(int)
    cells = [feats[:, :, ys[i]:ys[i + 1], xs[j]:xs[j + 1]].astype(np.float64).mean(axis=(2, 3))
             for i in range(GRID) for j in range(GRID)]
    return np.concatenate(cells, axis=1)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T, 0.0))


def twins(test: np.ndarray, golden: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bool [M, N]: golden image n is a twin of test image m; nearest / 10th nearest [M])."""
    d = distances(layouts(test), layouts(golden))
    s = np.sort(d, axis=1)
    return d < TWIN * s[:, 9:10], s[:, 0] / s[:, 9]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--cache", type=Path, required=True, help="the dataset's feature cache (benchmarks/feature_cache.py)")
    ap.add_argument("--out", type=Path, required=True, help="a new folder, outside the repository")
    args = ap.parse_args()
    cache = np.load(args.cache, allow_pickle=False)
    golden_paths = list_images(args.dataset / "train" / "good")
    items = mvtec_test_set(args.dataset)
    if len(golden_paths) != len(cache["train"]) or [i.defect for i in items] != list(cache["kinds"]):
        sys.exit(f"{args.cache} was not made from all of {args.dataset} (train/good and test/ in order): "
                 f"make it with benchmarks/feature_cache.py without --train-limit")
    twin, ratio = twins(cache["test"], cache["train"])
    kinds = np.array([i.defect for i in items])
    for k in sorted(set(kinds)):
        sel = kinds == k
        print(f"{k:<10} {sel.sum():4d} test images, {twin[sel].any(1).mean():4.0%} with a golden twin "
              f"(median nearest/10th {np.median(ratio[sel]):.2f})")
    dropped = twin.any(0)
    print(f"train/good: {len(golden_paths)} golden images, {dropped.sum()} twins of test images left out, "
          f"{(~dropped).sum()} kept")
    if args.out.exists():
        sys.exit(f"{args.out} exists: give a new folder")
    (args.out / "train" / "good").mkdir(parents=True)
    for p, drop in zip(golden_paths, dropped):
        if not drop:
            shutil.copy2(p, args.out / "train" / "good" / p.name)
    for sub in ("test", "ground_truth"):
        if (args.dataset / sub).is_dir():
            (args.out / sub).symlink_to((args.dataset / sub).resolve(), target_is_directory=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
