"""A small normalizing flow over the patch-feature map (FastFlow-style; Yu et al., 2021), run as
an engine head: it outputs each position's negative log-likelihood under the flow.

    x [N, D, h, w] --standardise--> --fixed 1x1 projection P (PCA whitening, D -> C)--> z0
    z0 --K affine coupling blocks (subnets alternate 3x3 / 1x1 convs; a fixed orthogonal 1x1
         channel mixing after each)--> z,  log|det dz/dz0| per position
    output = (0.5 * ||z||^2 - log|det|) / C     [N, 1, h, w]   (nats per channel, constant dropped)

The projection and the mixing matrices are fixed buffers (set at fit, not trained): only the
couplings' subnets learn. The projection's own log-determinant is the same for every position,
so it is left out (it shifts every score equally). Everything is convolutions, slices, tanh and
exp, so ONNX / OpenVINO / TensorRT export it with no data-dependent control flow.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from engines.backbones.heads import Standardise


class AffineCoupling(nn.Module):
    """y1 = x1; y2 = x2 * exp(s(x1)) + t(x1), with s soft-clamped to (-clamp, clamp) by tanh so
    no scale can blow up. The subnet's last conv starts at zero: the block starts as identity."""

    def __init__(self, channels: int, hidden: int, kernel: int, clamp: float):
        super().__init__()
        self.split = channels // 2
        rest = channels - self.split
        pad = kernel // 2
        self.subnet = nn.Sequential(nn.Conv2d(self.split, hidden, kernel, padding=pad), nn.ReLU(),
                                    nn.Conv2d(hidden, 2 * rest, kernel, padding=pad))
        nn.init.zeros_(self.subnet[-1].weight)
        nn.init.zeros_(self.subnet[-1].bias)
        self.clamp = float(clamp)
        self.rest = rest

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [N, C, h, w] -> (y [N, C, h, w], log|det| [N, 1, h, w])."""
        x1, x2 = x[:, :self.split], x[:, self.split:]
        st = self.subnet(x1)
        s = self.clamp * torch.tanh(st[:, :self.rest] / self.clamp)
        y2 = x2 * torch.exp(s) + st[:, self.rest:]
        return torch.cat([x1, y2], 1), s.sum(1, keepdim=True)


class FeatureFlow(nn.Module):
    """The flow head; ``forward`` gives the per-position NLL per channel, float32 [N, 1, h, w]."""

    def __init__(self, in_dim: int, channels: int, blocks: int, hidden: int, clamp: float = 2.0):
        super().__init__()
        self.norm = Standardise(in_dim)
        self.channels = channels
        self.register_buffer("projection", torch.eye(channels, in_dim))  # [C, D], set at fit
        self.register_buffer("mixing", torch.eye(channels).repeat(blocks, 1, 1))  # [K, C, C] orthogonal
        self.couplings = nn.ModuleList(AffineCoupling(channels, hidden, 3 if k % 2 == 0 else 1, clamp)
                                       for k in range(blocks))

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features [N, D, h, w] -> (z [N, C, h, w], log|det dz/dz0| [N, 1, h, w])."""
        z = F.conv2d(self.norm(x), self.projection[:, :, None, None])
        logdet = torch.zeros_like(z[:, :1])
        for k, coupling in enumerate(self.couplings):
            z, ld = coupling(z)
            logdet = logdet + ld
            z = F.conv2d(z, self.mixing[k][:, :, None, None])
        return z, logdet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z, logdet = self.transform(x)
        return (0.5 * (z * z).sum(1, keepdim=True) - logdet) / self.channels
