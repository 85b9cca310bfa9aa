"""Where our PatchCore and anomalib's differ, one step at a time (issue 12).

Extracts the raw stride-8 / stride-16 EfficientNet-Lite0 stage maps of a dataset once (OpenVINO
fp32, the packaged ImageNet weights), then builds the patch features and scores the test set for
each variant of the steps that differ between the two pipelines:

  resize     cv2 INTER_AREA (ours) vs antialiased bilinear (torchvision Resize, anomalib's)
  pad        3x3 average over the cells inside the map vs counting the zero padding (anomalib's)
  upsample   stride-16 map to stride 8 bilinear (ours) vs nearest (anomalib's)
  bank       1% coreset capped at 2000 (ours) vs 10% (anomalib's default)
  reweight   PatchCore's image-score reweighting with 9 neighbours (anomalib's) vs none

and prints image AUROC, escape rate at 1% false rejects on the test good images, and pixel AUROC
(maps and masks at the network input, as anomalib computes it). Run:

    python benchmarks/bench_feature_ablation.py --dataset ../shared/data/magnetic_tile --train-limit 100
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import auroc, mvtec_test_set, operating_point, threshold_at_frr  # noqa: E402
from calibration.methods.coreset import greedy_coreset  # noqa: E402
from engines.backbones.patch_features import build_patch_feature_net  # noqa: E402
from engines.openvino_engine import import_openvino  # noqa: E402

VARIANTS = {
    "ours (before)": {},
    "+ zero-padded 3x3 average": {"pad": True},
    "+ nearest upsampling": {"nearest": True},
    "+ antialiased bilinear resize": {"resize": "tv"},
    "+ 10% bank": {"ratio": 0.10, "cap": None},
    "zero-padded + nearest upsampling": {"pad": True, "nearest": True},
    "zero-padded + 10% bank": {"pad": True, "ratio": 0.10, "cap": None},
    "anomalib's steps (1% bank)": {"pad": True, "nearest": True, "resize": "tv"},
}


class _RawStages(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.stage_maps(x)


def _resize(rgb: np.ndarray, size: int, how: str) -> np.ndarray:
    if how == "tv":
        t = torch.from_numpy(rgb.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
        return F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].numpy()
    h, w = rgb.shape[:2]
    interp = cv2.INTER_AREA if (w > size or h > size) else cv2.INTER_LINEAR
    return cv2.resize(rgb, (size, size), interpolation=interp).transpose(2, 0, 1).astype(np.float32) / 255.0


def extract(files: list[Path], size: int, how: str, model) -> tuple[np.ndarray, np.ndarray]:
    s8, s16 = [], []
    for i in range(0, len(files), 8):
        x = np.stack([_resize(cv2.cvtColor(cv2.imread(str(f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), size, how)
                      for f in files[i:i + 8]])
        out = model(x)
        s8.append(out[0]), s16.append(out[1])
    return np.concatenate(s8), np.concatenate(s16)


def embed(s8: np.ndarray, s16: np.ndarray, pad: bool, nearest: bool) -> torch.Tensor:
    pool = torch.nn.AvgPool2d(3, 1, 1, count_include_pad=pad)
    a, b = pool(torch.from_numpy(s8)), pool(torch.from_numpy(s16))
    b = F.interpolate(b, size=a.shape[-2:], mode="nearest") if nearest else \
        F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([a, b], 1)


def score(train: torch.Tensor, test: torch.Tensor, ratio: float, cap, reweight: int):
    n, d, h, w = train.shape
    patches = train.permute(0, 2, 3, 1).reshape(-1, d).contiguous()
    k = int(round(len(patches) * ratio))
    k = min(k, cap) if cap else k
    t0 = time.perf_counter()
    bank = patches[greedy_coreset(patches.numpy(), k)]
    fit_s = time.perf_counter() - t0
    bsq = (bank * bank).sum(1)
    q_all = test.permute(0, 2, 3, 1).reshape(len(test), -1, d)
    plain, reweighted, maps = [], [], []
    for q in q_all:
        d2, loc = ((q * q).sum(1, keepdim=True) - 2 * q @ bank.T + bsq[None]).min(1)
        dist = d2.clamp_min(0).sqrt()
        p = int(dist.argmax())
        plain.append(float(dist[p]))
        support = ((bank - bank[loc[p]]) ** 2).sum(1).topk(reweight, largest=False).indices
        weight = 1 - torch.softmax(((bank[support] - q[p]) ** 2).sum(1).sqrt(), 0)[0]
        reweighted.append(float(weight * dist[p]))
        maps.append(dist.reshape(h, w))
    return np.array(plain), np.array(reweighted), torch.stack(maps), k, fit_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True)
    ap.add_argument("--train-limit", type=int, default=None, help="first N train/good images (sorted)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), help="names from the list above")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    ov = import_openvino()
    net = build_patch_feature_net({"backbone": "efficientnet_lite0"})
    with tempfile.TemporaryDirectory() as tmp:
        onnx = Path(tmp, "stages.onnx")
        torch.onnx.export(_RawStages(net), torch.zeros(1, 3, a.size, a.size), str(onnx), input_names=["x"],
                          output_names=["s8", "s16"], dynamic_axes={"x": {0: "n"}, "s8": {0: "n"}, "s16": {0: "n"}},
                          dynamo=False)
        model = ov.Core().compile_model(str(onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    train_files = sorted((a.dataset / "train" / "good").iterdir())[:a.train_limit]
    items = mvtec_test_set(a.dataset)
    labels = np.array([it.label for it in items])
    masks = []
    for it in items:
        m = cv2.imread(str(it.mask), cv2.IMREAD_GRAYSCALE) if it.mask else None
        masks.append(np.zeros((a.size, a.size), bool) if m is None else
                     cv2.resize(m, (a.size, a.size), interpolation=cv2.INTER_NEAREST) > 0)
    masks = np.stack(masks)
    usable = np.array([lab == 0 or m.any() for lab, m in zip(labels, masks)])
    stages = {}
    results = []
    for name in a.variants:
        v = {"pad": False, "nearest": False, "resize": "cv", "ratio": 0.01, "cap": 2000, **VARIANTS[name]}
        if v["resize"] not in stages:
            stages[v["resize"]] = (extract(train_files, a.size, v["resize"], model),
                                   extract([it.path for it in items], a.size, v["resize"], model))
        (tr8, tr16), (te8, te16) = stages[v["resize"]]
        plain, rew, maps, k, fit_s = score(embed(tr8, tr16, v["pad"], v["nearest"]),
                                           embed(te8, te16, v["pad"], v["nearest"]), v["ratio"], v["cap"], 9)
        up = F.interpolate(maps[:, None], size=(a.size, a.size), mode="nearest" if v["nearest"] else "bilinear")[:, 0]
        smooth = np.stack([cv2.GaussianBlur(m, (0, 0), 4.0) for m in up.numpy()])
        pix = auroc(masks[usable][:, ::2, ::2].ravel(), smooth[usable][:, ::2, ::2].ravel()) if masks.any() else None
        r = {"variant": name, "image_auroc": round(auroc(labels, plain), 4),
             "image_auroc_reweighted": round(auroc(labels, rew), 4),
             "escape_at_1pct_frr": round(operating_point(
                 plain[labels == 0], plain[labels == 1], threshold_at_frr(plain[labels == 0], 0.01))["escape_rate"], 3),
             "pixel_auroc": None if pix is None else round(pix, 4), "bank": k, "coreset_s": round(fit_s, 1)}
        results.append(r)
        print(f"{name:46s} image {r['image_auroc']:.4f} (reweighted {r['image_auroc_reweighted']:.4f})  "
              f"escape@1% {r['escape_at_1pct_frr']:.3f}  pixel {r['pixel_auroc']}  bank {k}", flush=True)
    if a.json:
        a.json.write_text(json.dumps({"dataset": str(a.dataset), "train_limit": a.train_limit, "size": a.size,
                                      "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
