"""The discriminator (SimpleNet-style, inspector/methods/discriminator.py) against PatchCore on
cached patch features (benchmarks/feature_cache.py), for issue 13 research.

Fits both methods with calibration's own fitters on the cache's train features, scores the test
features (the discriminator's head run in torch, as the torch engine runs it), and prints image
AUROC, pixel AUROC (maps at the work image, padding cut off, every 2nd pixel) and the escape rate
at 1% false rejects on the test good images, plus fit seconds and the head's ms per frame (torch
fp32, one 256x256 frame's feature map, --threads threads, median of 50).
Variants of the discriminator's config are given as JSON (merged into ``scorer.discriminator``):

    python benchmarks/bench_discriminator.py /work/featcache/bottle_256.npz \
        --variant '{}' --variant '{"noise_std": 0.5}'
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import auroc, operating_point, threshold_at_frr  # noqa: E402
from calibration.methods import NoProgress, fitter  # noqa: E402
from engines.backbones.heads import load_head  # noqa: E402
from inspector.methods.base import score_patch_maps  # noqa: E402
from inspector.methods.registry import Scorer, method_of  # noqa: E402
from inspector.settings import settings_from_dict  # noqa: E402


def _metrics(sm, labels, masks, has_mask, content_hw) -> dict:
    scores = sm.image_scores.astype(np.float64)
    good, bad = scores[labels == 0], scores[labels == 1]
    ch, cw = content_hw
    usable = (labels == 0) | has_mask
    maps = sm.pixel_maps[usable][:, :ch:2, :cw:2]
    truth = masks[usable][:, :ch:2, :cw:2] > 0
    return {"image_auroc": round(auroc(labels, scores), 4),
            "pixel_auroc": round(auroc(truth.ravel(), maps.ravel()), 4) if truth.any() else None,
            "escape_at_1pct_frr": round(operating_point(good, bad, threshold_at_frr(good, 0.01))["escape_rate"], 3)}


def synthetic_negatives(dataset: Path, n: int, size: int, seed: int, cover: float = 0.25) -> np.ndarray:
    """Patch features float32 [Q, D] of image-space synthetic defects (calibration/synthetic_defects.py,
    every kind in turn, 16-32 px at the work image) pasted into the first ``n`` train/good images:
    the patches whose cell the defect's mask covers by at least ``cover``. Torch backbone (its
    features match the cache's OpenVINO fp32 ones to ~1e-6), ``size``x``size`` input."""
    import cv2

    from calibration.features import network_description
    from calibration.golden import read_golden
    from calibration.synthetic_defects import KINDS, DefectSynthesizer
    from engines.backbones.patch_features import build_patch_feature_net
    from inspector.preprocess import Preprocessor, PreprocessSpec
    from inspector.settings import BackboneConfig

    images = read_golden(dataset / "train" / "good", max_pixels=10**8).images[:n]
    syn = DefectSynthesizer(images, seed=seed)
    pre = Preprocessor(PreprocessSpec(size, size, None))
    net = build_patch_feature_net(network_description(BackboneConfig()))
    rng = np.random.default_rng(seed)
    out = []
    for s in range(0, len(images), 8):
        xs, masks = [], []
        for i in range(s, min(s + 8, len(images))):
            h, w = images[i].shape[:2]
            frame_px = int(round(rng.integers(16, 33) * min(h, w) / size))
            d = syn.make(i, KINDS[i % len(KINDS)], min(frame_px, min(h, w) // 2))
            xs.append(pre.prepare(d.image)[0])
            masks.append(cv2.resize(d.mask.astype(np.float32), (size // 8, size // 8), interpolation=cv2.INTER_AREA))
        with torch.no_grad():
            f = net(torch.from_numpy(np.stack(xs))).numpy()
        m = np.stack(masks)
        out.append(f.transpose(0, 2, 3, 1)[m >= cover])
    return np.concatenate(out).astype(np.float32)


def run(config_data: dict, train: np.ndarray, test: np.ndarray, work_hw, seed: int, negatives=None):
    """(ScoreMap of the test set, fit seconds, head ms per frame or None, TrainingSummary or None)."""
    config = settings_from_dict({"scorer": config_data}, base_dir=Path("/")).scorer
    t0 = time.perf_counter()
    if negatives is not None:
        from calibration.methods.discriminator import fit_with_negatives

        state = fit_with_negatives(train, config, seed, NoProgress(), negatives)
    else:
        state = fitter(config.method)(train, config, seed, NoProgress())
    fit_s = time.perf_counter() - t0
    method = method_of(config.method)
    if method.HEAD is None:
        return Scorer(method, state).score({"features": test}, work_hw), fit_s, None, None
    description, weights = state.network_head()
    head = load_head(description, weights)
    with torch.no_grad():
        one = torch.from_numpy(test[:1])
        head(one)
        times = []
        for _ in range(50):  # the median of 50: these 2 cores are shared
            t1 = time.perf_counter()
            head(one)
            times.append(time.perf_counter() - t1)
        ms = float(np.median(times)) * 1000
        out = torch.cat([head(torch.from_numpy(test[s:s + 16])) for s in range(0, len(test), 16)]).numpy()
    p = state.params
    return score_patch_maps(out[:, 0], work_hw, p.smoothing_sigma), fit_s, ms, p.training


def engine_time(hidden_dim: int, size: int = 256, runs: int = 50) -> None:
    """OpenVINO fp32, one thread: ms per 256x256 frame of the feature network alone and with a
    discriminator head in the same graph (random weights: the time does not depend on them)."""
    import tempfile

    from calibration.features import network_description
    from engines.backbones.export import export_onnx
    from engines.backbones.heads import FeaturesWithHead, build_head
    from engines.backbones.patch_features import build_patch_feature_net
    from engines.openvino_engine import import_openvino
    from inspector.settings import BackboneConfig

    net = build_patch_feature_net(network_description(BackboneConfig()))
    d = int(net(torch.zeros(1, 3, size, size)).shape[1])
    head = build_head({"kind": "discriminator", "in_dim": d, "adapt_dim": d, "hidden_dim": hidden_dim})
    ov = import_openvino()
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    requests = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, module in (("backbone", net), ("backbone + head", FeaturesWithHead(net, head))):
            onnx = export_onnx(module, Path(tmp) / f"{len(requests)}.onnx", (3, size, size))
            model = ov.Core().compile_model(str(onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32",
                                                               "INFERENCE_NUM_THREADS": 1})
            requests[name] = model.create_infer_request()
            requests[name].infer({0: x})
    times = {name: [] for name in requests}
    for _ in range(runs):  # interleaved, so a burst of load on the shared cores hits both alike
        for name, req in requests.items():
            t0 = time.perf_counter()
            req.infer({0: x})
            times[name].append(time.perf_counter() - t0)
    for name, t in times.items():
        print(f"openvino fp32 1 thread, {name:16s} median {np.median(t) * 1000:.2f} ms  "
              f"min {min(t) * 1000:.2f} ms per {size}x{size} frame", flush=True)
    extra = np.array(times["backbone + head"]) - np.array(times["backbone"])
    print(f"head beyond the backbone: median of the paired differences {np.median(extra) * 1000:.2f} ms", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", type=Path, help="an npz made by benchmarks/feature_cache.py")
    ap.add_argument("--variant", action="append", default=[], help="JSON merged into scorer.discriminator")
    ap.add_argument("--no-patchcore", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for scoring the heads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--synthetic", type=Path, metavar="DATASET", default=None,
                    help="also train on image-space synthetic defects pasted into DATASET's train/good images")
    ap.add_argument("--synthetic-images", type=int, default=200)
    ap.add_argument("--engine-time", type=int, metavar="HIDDEN", default=None,
                    help="only time backbone vs backbone + head (this hidden width) on OpenVINO fp32")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.engine_time:
        engine_time(a.engine_time)
        return 0
    z = np.load(a.cache, allow_pickle=False)
    train, test = z["train"].astype(np.float32), z["test"].astype(np.float32)
    labels, masks, has_mask = z["labels"], z["masks"], z["has_mask"]
    work_hw, content_hw = tuple(int(v) for v in z["work_hw"]), tuple(int(v) for v in z["content_hw"])
    print(f"{a.cache.name}: train {train.shape}, test {test.shape} ({int(labels.sum())} defective)", flush=True)
    runs = [] if a.no_patchcore else [("patchcore", {"type": "memory_bank", "method": "patchcore"})]
    for v in a.variant or ["{}"]:
        runs.append((f"discriminator {v}", {"type": "discriminative", "method": "discriminator",
                                            "discriminator": json.loads(v)}))
    negatives = None
    if a.synthetic is not None:
        t0 = time.perf_counter()
        negatives = synthetic_negatives(a.synthetic, a.synthetic_images, work_hw[0], a.seed)
        print(f"synthetic defects: {len(negatives)} defect patches from {a.synthetic_images} images "
              f"in {time.perf_counter() - t0:.1f}s", flush=True)
    for name, data in runs:
        sm, fit_s, ms, training = run(data, train, test, work_hw, a.seed,
                                      negatives if name.startswith("discriminator") else None)
        m = _metrics(sm, labels, masks, has_mask, content_hw)
        head = f"  head {ms:.2f} ms/frame" if ms is not None else ""
        if training is not None:
            head += f"  epochs {training.epochs_run} (best {training.best_epoch}, val {training.best_val_loss:.4f})"
        print(f"{name:60s} image {m['image_auroc']:.4f}  pixel {m['pixel_auroc']}  "
              f"escape@1% {m['escape_at_1pct_frr']:.3f}  fit {fit_s:.1f}s{head}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
