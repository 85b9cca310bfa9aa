"""The patch-feature network the engines run: backbone stride-8 and stride-16 maps, each
averaged over its 3x3 neighbourhood (PatchCore's local aggregation), the stride-16 map upsampled
to stride 8, concatenated, and optionally reduced to ``feature_dim`` channels by averaging
adjacent channels (a fixed 1x1 conv, so it exports to ONNX/TensorRT as one layer).

The 3x3 average counts the zero padding at the map's border (``aggregation: zero_padded``, as
PatchCore's reference code and anomalib do): border cells come out shrunk, which keeps the
frame's edge, different in every crop, from scoring as a defect (docs/BENCHMARKS.md, issue 12).
Bundles made before that averaged over the cells inside the map only (``edge_mean``); their
description says so and they are rebuilt the same way.

Input: RGB float32 NCHW in [0, 1] (the backbone's own normalisation is inside the graph).
Output "features": float32 [N, D, H/8, W/8].
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from engines.backbones import AGGREGATIONS
from engines.backbones.efficientnet_lite import LITE_VARIANTS, EfficientNetLite
from engines.backbones.resnet import RESNET_VARIANTS, ResNet
from engines.backbones.weights import load_into, resolve_weights_path

BACKBONES = tuple(sorted([*LITE_VARIANTS, *RESNET_VARIANTS]))
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_average_matrix(in_dim: int, out_dim: int) -> torch.Tensor:
    """[out_dim, in_dim] weights that average contiguous channel groups (adaptive avg pooling
    over channels, as PatchCore reduces dimensions), deterministic: no fitting, no randomness."""
    w = torch.zeros(out_dim, in_dim)
    for i in range(out_dim):
        start = (i * in_dim) // out_dim
        end = max(((i + 1) * in_dim + out_dim - 1) // out_dim, start + 1)
        w[i, start:end] = 1.0 / (end - start)
    return w


class PatchFeatureNet(nn.Module):
    def __init__(self, backbone: str = "efficientnet_lite0", feature_dim: Optional[int] = None,
                 aggregation: str = AGGREGATIONS[0]):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"unknown feature aggregation {aggregation!r}; choose one of {AGGREGATIONS}")
        if backbone in LITE_VARIANTS:
            self.backbone = EfficientNetLite(backbone)
            s8 = [s for s in self.backbone.stages if s.stride == 8][-1]
            s16 = [s for s in self.backbone.stages if s.stride == 16][-1]
            self._lite_blocks = (s8.last_block, s16.last_block)
            channels = s8.channels + s16.channels
            mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
        elif backbone in RESNET_VARIANTS:
            self.backbone = ResNet(backbone)
            self._lite_blocks = None
            channels = sum(self.backbone.layer_channels.values())
            mean, std = _IMAGENET_MEAN, _IMAGENET_STD
        else:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {BACKBONES}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.feature_dim = feature_dim or channels
        if feature_dim and feature_dim != channels:
            self.reduce = nn.Conv2d(channels, feature_dim, 1, bias=False)
            self.reduce.weight.data.copy_(channel_average_matrix(channels, feature_dim)[:, :, None, None])
            self.reduce.weight.requires_grad_(False)
        else:
            self.reduce = nn.Identity()
        self.aggregate = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=aggregation == "zero_padded")

    def stage_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x - self.mean) / self.std
        if self._lite_blocks is not None:
            maps = self.backbone.stage_maps(x, set(self._lite_blocks))
            return maps[self._lite_blocks[0]], maps[self._lite_blocks[1]]
        return self.backbone.stride8_16(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s8, s16 = self.stage_maps(x)
        s8 = self.aggregate(s8)
        s16 = self.aggregate(s16)
        s16 = F.interpolate(s16, size=s8.shape[-2:], mode="bilinear", align_corners=False)
        return self.reduce(torch.cat([s8, s16], dim=1))


def build_patch_feature_net(description: dict) -> PatchFeatureNet:
    """Build the network from its JSON description (as stored in a bundle manifest) and load
    its weights. Keys: backbone, weights (path or None for the packaged ones), feature_dim,
    aggregation (absent in bundles made before it existed: those averaged inside the map)."""
    net = PatchFeatureNet(description["backbone"], description.get("feature_dim"),
                          description.get("aggregation", "edge_mean"))
    path = resolve_weights_path(description["backbone"], description.get("weights"))
    load_into(net.backbone, path)
    return net.eval()
