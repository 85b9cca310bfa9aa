"""Trained heads that run on top of the patch-feature network, exported with it as ONE network
so every engine (onnxruntime, openvino, tensorrt, torch) runs backbone + head in one call.

Every head takes the feature map float32 [N, D, h, w], standardise it per channel with the golden
mean/std (fixed buffers, not trained), and return one anomaly value per patch, float32 [N, 1, h, w]:

- ``svdd``: Deep SVDD (Ruff et al., ICML 2018) projection of bias-free 1x1 convs with leaky ReLU;
  output = squared distance of the projection to the centre c.
- ``autoencoder``: a small convolutional autoencoder; output = the mean over channels of the
  squared reconstruction error (so "L2 over channels", divided by D).
- ``discriminator``: SimpleNet's (Liu et al., CVPR 2023) linear feature adaptor + 2-layer MLP
  discriminator as 1x1 convs; output = the logit that a patch is anomalous.
- ``flow``: a small normalizing flow (engines/backbones/flow.py); output = each position's
  negative log-likelihood per channel.
- ``fanogan``: f-AnoGAN's encoder + generator + discriminator features per patch (1x1 convs);
  output = izi_f's residual (rebuild error + kappa * discriminator-feature error).
- ``anoddpm``: partial diffusion with a fixed simplex-noise field, a few DDIM denoising steps
  unrolled; output = mean over channels of the squared reconstruction error (GPU only: the
  method refuses CPU engines, inspector/methods/anoddpm.py).

A head is described by JSON (kind, dims) and its weights live in the bundle's arrays.npz under
the prefix ``head.`` (names as in the torch state_dict), so the torch engine rebuilds it from
the manifest without pickle and the other engines read the ONNX.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HEAD_PREFIX = "head."
HEAD_OUTPUT = "patch_scores"


class Standardise(nn.Module):
    """(x - mean) / std per channel, with fixed buffers set from the golden features."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(1, dim, 1, 1))
        self.register_buffer("std", torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SvddHead(nn.Module):
    """Bias-free 1x1 conv projection (no bias and no affine norm: a bias lets the network map
    everything onto c, the trivial solution the paper rules out)."""

    def __init__(self, in_dim: int, hidden_dims: tuple[int, ...], out_dim: int):
        super().__init__()
        self.norm = Standardise(in_dim)
        dims = [in_dim, *hidden_dims, out_dim]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 1, bias=False) for a, b in zip(dims[:-1], dims[1:]))
        self.register_buffer("centre", torch.zeros(1, out_dim, 1, 1))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.leaky_relu(x, 0.1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.embed(x) - self.centre) ** 2).sum(1, keepdim=True)


class FeatureAutoencoder(nn.Module):
    """Encoder: 1x1 conv D->w0, 3x3 stride-2 conv w0->w1, 3x3 conv w1->bottleneck (at half the
    patch grid); decoder: 3x3 conv bottleneck->w1, bilinear upsampling to the patch grid, 1x1
    convs w1->w0->D (1x1 at full resolution keeps it cheap). Output: per-patch mean squared
    error over the standardised channels."""

    def __init__(self, in_dim: int, widths: tuple[int, int], bottleneck: int):
        super().__init__()
        w0, w1 = widths
        self.norm = Standardise(in_dim)
        self.enc = nn.Sequential(
            nn.Conv2d(in_dim, w0, 1), nn.ReLU(),
            nn.Conv2d(w0, w1, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w1, bottleneck, 3, padding=1), nn.ReLU(),
        )
        self.dec_in = nn.Sequential(nn.Conv2d(bottleneck, w1, 3, padding=1), nn.ReLU())
        self.dec_out = nn.Sequential(nn.Conv2d(w1, w0, 1), nn.ReLU(), nn.Conv2d(w0, in_dim, 1))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """z: standardised features [N, D, h, w] -> their reconstruction, same shape."""
        y = self.dec_in(self.enc(z))
        y = F.interpolate(y, size=z.shape[-2:], mode="bilinear", align_corners=False)
        return self.dec_out(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        return ((self.reconstruct(z) - z) ** 2).mean(1, keepdim=True)


class DiscriminatorHead(nn.Module):
    """Standardise -> adaptor (linear 1x1 conv D->adapt_dim, trained with the discriminator, as in
    SimpleNet) -> 1x1 conv adapt_dim->hidden, leaky ReLU, 1x1 conv hidden->1: the logit that the
    patch is anomalous (higher = more anomalous). Synthetic anomalies are added to the adaptor's
    output during training (calibration/methods/discriminator.py), so ``adapt`` is split out."""

    def __init__(self, in_dim: int, adapt_dim: int, hidden_dim: int):
        super().__init__()
        self.norm = Standardise(in_dim)
        self.adaptor = nn.Conv2d(in_dim, adapt_dim, 1)
        self.hidden = nn.Conv2d(adapt_dim, hidden_dim, 1)
        self.out = nn.Conv2d(hidden_dim, 1, 1)

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        return self.adaptor(self.norm(x))

    def discriminate(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(F.leaky_relu(self.hidden(z), 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.discriminate(self.adapt(x))


def _mlp(dims: list[int], last_act: bool) -> nn.Sequential:
    """1x1 convs through ``dims`` with leaky ReLU between them (and after the last if asked)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Conv2d(a, b, 1))
        if last_act or i < len(dims) - 2:
            layers.append(nn.LeakyReLU(0.2))
    return nn.Sequential(*layers)


class FanoganHead(nn.Module):
    """f-AnoGAN (Schlegl et al. 2019) over patch features, all 1x1 convs (one GAN sample = one
    standardised patch feature): encoder E (D -> hidden -> latent), generator G (latent -> hidden
    -> hidden -> D), the discriminator's feature layers f (D -> disc_hidden -> disc_hidden) and
    its output layer. Output: izi_f's anomaly score per patch, mean over channels of
    (G(E(x)) - x)^2 plus ``kappa`` times the mean of (f(G(E(x))) - f(x))^2."""

    def __init__(self, in_dim: int, latent_dim: int, hidden: int, disc_hidden: int):
        super().__init__()
        self.norm = Standardise(in_dim)
        self.encoder = _mlp([in_dim, hidden, latent_dim], last_act=False)
        self.generator = _mlp([latent_dim, hidden, hidden, in_dim], last_act=False)
        self.disc_features = _mlp([in_dim, disc_hidden, disc_hidden], last_act=True)
        self.disc_out = nn.Conv2d(disc_hidden, 1, 1)
        self.register_buffer("kappa", torch.ones(1))

    def residuals(self, z: torch.Tensor, rebuilt: torch.Tensor) -> torch.Tensor:
        """Standardised features and their rebuild -> the per-patch score [N, 1, h, w]."""
        image = ((rebuilt - z) ** 2).mean(1, keepdim=True)
        feat = ((self.disc_features(rebuilt) - self.disc_features(z)) ** 2).mean(1, keepdim=True)
        return image + self.kappa * feat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        return self.residuals(z, self.generator(self.encoder(z)))


class DiffusionDenoiser(nn.Module):
    """AnoDDPM's noise predictor over standardised feature maps: 1x1 conv D -> width, two 3x3
    convs (SiLU), 1x1 conv back to D; the timestep enters as a per-channel bias from its
    sinusoidal embedding."""

    def __init__(self, in_dim: int, width: int):
        super().__init__()
        self.width = width
        self.conv_in = nn.Conv2d(in_dim, width, 1)
        self.time = nn.Linear(width, 2 * width)
        self.mid1 = nn.Conv2d(width, width, 3, padding=1)
        self.mid2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv_out = nn.Conv2d(width, in_dim, 1)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """t float [B] (diffusion step) -> [B, 2 * width] (a bias for each 3x3 conv)."""
        half = self.width // 2
        freq = torch.exp(-torch.arange(half, dtype=torch.float32, device=t.device) * (9.21 / max(half - 1, 1)))
        ang = t[:, None] * freq[None]
        return self.time(torch.cat([torch.sin(ang), torch.cos(ang)], 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b1, b2 = self.embed(t)[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.conv_in(x))
        h = F.silu(self.mid1(h) + b1)
        h = F.silu(self.mid2(h) + b2) + h
        return self.conv_out(h)


class AnoDdpmHead(nn.Module):
    """AnoDDPM (Wyatt et al., CVPRW 2022) on standardised features: diffuse to step t_lambda with
    a fixed simplex-noise field (buffer ``noise`` [1, D, h, w], drawn at calibration), then
    ``steps`` deterministic DDIM denoising steps (buffers ``timesteps`` [steps], ``alpha_bars``
    [steps + 1], the last 1.0) unrolled in the graph. Output: mean over channels of the squared
    difference between the features and their denoised reconstruction."""

    def __init__(self, in_dim: int, width: int, steps: int, grid_hw: tuple[int, int]):
        super().__init__()
        self.norm = Standardise(in_dim)
        self.denoiser = DiffusionDenoiser(in_dim, width)
        self.steps = steps
        self.register_buffer("noise", torch.zeros(1, in_dim, *grid_hw))
        self.register_buffer("timesteps", torch.zeros(steps))
        self.register_buffer("alpha_bars", torch.ones(steps + 1))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bars
        x = ab[0].sqrt() * z + (1 - ab[0]).sqrt() * self.noise
        for i in range(self.steps):
            t = self.timesteps[i].reshape(1)  # one step for the whole batch: its bias broadcasts
            eps = self.denoiser(x, t)
            x0 = (x - (1 - ab[i]).sqrt() * eps) / ab[i].sqrt()
            x = ab[i + 1].sqrt() * x0 + (1 - ab[i + 1]).sqrt() * eps
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.norm(x)
        return ((self.reconstruct(z) - z) ** 2).mean(1, keepdim=True)


def build_head(head: dict) -> nn.Module:
    """A head from its JSON description (weights not loaded). One explicit table of kinds."""
    kind = head["kind"]
    if kind == "svdd":
        return SvddHead(int(head["in_dim"]), tuple(int(v) for v in head["hidden_dims"]), int(head["out_dim"]))
    if kind == "autoencoder":
        return FeatureAutoencoder(int(head["in_dim"]), tuple(int(v) for v in head["widths"]), int(head["bottleneck"]))
    if kind == "discriminator":
        return DiscriminatorHead(int(head["in_dim"]), int(head["adapt_dim"]), int(head["hidden_dim"]))
    if kind == "flow":
        from engines.backbones.flow import FeatureFlow  # imports this module's Standardise

        return FeatureFlow(int(head["in_dim"]), int(head["channels"]), int(head["blocks"]), int(head["hidden"]),
                           float(head["clamp"]))
    if kind == "fanogan":
        return FanoganHead(int(head["in_dim"]), int(head["latent_dim"]), int(head["hidden"]), int(head["disc_hidden"]))
    if kind == "anoddpm":
        return AnoDdpmHead(int(head["in_dim"]), int(head["width"]), int(head["steps"]),
                           (int(head["grid_hw"][0]), int(head["grid_hw"][1])))
    raise ValueError(f"unknown head kind {kind!r}; known: svdd, autoencoder, discriminator, flow, fanogan, anoddpm")


def head_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """The head's state as float32 arrays named ``head.<state_dict key>`` (for arrays.npz)."""
    return {HEAD_PREFIX + k: v.detach().cpu().float().numpy().copy() for k, v in module.state_dict().items()}


def load_head(head: dict, arrays: dict[str, np.ndarray]) -> nn.Module:
    module = build_head(head)
    state = {k[len(HEAD_PREFIX):]: torch.from_numpy(np.array(v, dtype=np.float32))
             for k, v in arrays.items() if k.startswith(HEAD_PREFIX)}
    module.load_state_dict(state, strict=True)
    return module.eval()


class FeaturesWithHead(nn.Module):
    """images [N, 3, H, W] -> head(features(images)) [N, 1, H/8, W/8]."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_head_network(description: dict, base_dir: Optional[Path] = None,
                       arrays: Optional[dict[str, np.ndarray]] = None) -> FeaturesWithHead:
    """The ``patch_features_head`` network: description = the patch-feature description plus
    ``head`` {kind, dims..., arrays: file name of the npz beside the ONNX}. Weights come from
    ``arrays`` when given, else from ``base_dir / head["arrays"]`` (loaded with allow_pickle=False)."""
    from engines.backbones.patch_features import build_patch_feature_net

    head = description["head"]
    if arrays is None:
        if base_dir is None:
            raise ValueError("patch_features_head network: need the bundle folder to read the head weights")
        with np.load(Path(base_dir) / head.get("arrays", "arrays.npz"), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files if k.startswith(HEAD_PREFIX)}
    return FeaturesWithHead(build_patch_feature_net(description), load_head(head, arrays)).eval()
