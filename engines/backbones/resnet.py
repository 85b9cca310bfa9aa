"""ResNet18 and Wide-ResNet50-2 in torchvision's state_dict layout (conv1, bn1, layer1..4, fc),
so a user-supplied torchvision ``.pth`` loads unchanged. Input: RGB float32 NCHW normalised with
ImageNet mean/std."""
from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64):
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


# name -> (block, layers, width_per_group)
RESNET_VARIANTS = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), 64),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), 128),
}


class ResNet(nn.Module):
    def __init__(self, variant: str = "resnet18", num_classes: int = 1000):
        super().__init__()
        block, layers, base_width = RESNET_VARIANTS[variant]
        self.variant = variant
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0], 1, base_width)
        self.layer2 = self._make_layer(block, 128, layers[1], 2, base_width)
        self.layer3 = self._make_layer(block, 256, layers[2], 2, base_width)
        self.layer4 = self._make_layer(block, 512, layers[3], 2, base_width)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        # stride-8 map = layer2, stride-16 map = layer3 (as in PatchCore)
        self.layer_channels = {"layer2": 128 * block.expansion, "layer3": 256 * block.expansion}

    def _make_layer(self, block, planes: int, blocks: int, stride: int, base_width: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, base_width=base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stride8_16(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        s8 = self.layer2(self.layer1(x))
        return s8, self.layer3(s8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s8, s16 = self.stride8_16(x)
        x = self.avgpool(self.layer4(s16))
        return self.fc(torch.flatten(x, 1))
