"""Fitting f-AnoGAN (inspector/methods/fanogan.py) on golden patch features, in two phases
(Schlegl et al. 2019):

1. a Wasserstein GAN with gradient penalty (Gulrajani et al. 2017) over standardised patch
   feature vectors: ``n_critic`` critic updates per generator update, latent z ~ N(0, I);
2. with G and the critic frozen, the encoder trained izi_f style: minimise the rebuild error
   mean((G(E(x)) - x)^2) plus kappa * mean((f(G(E(x))) - f(x))^2), f the critic's feature layers.
   A WGAN critic's features have no set scale, so kappa is divided by their mean energy
   mean(f(x)^2) on golden patches: the two terms are then both relative errors.

Both phases sample mini-batches of golden patches (seeded), Adam; no early stopping (a GAN's
losses do not say when it is done), fixed step counts instead.
"""
from __future__ import annotations

import numpy as np
import torch

from calibration.methods import Progress
from calibration.methods.training import deterministic, feature_stats, standardised_head, training_device
from engines.backbones.heads import FanoganHead, head_arrays
from inspector.methods import fanogan


def _patches(features: np.ndarray, limit: int, seed: int) -> np.ndarray:
    d = features.shape[1]
    patches = features.transpose(0, 2, 3, 1).reshape(-1, d)
    if len(patches) > limit:
        patches = patches[np.sort(np.random.default_rng(seed).choice(len(patches), limit, replace=False))]
    return np.ascontiguousarray(patches, dtype=np.float32)


def _as_maps(x: torch.Tensor) -> torch.Tensor:
    """[B, D] -> [B, D, 1, 1] for the 1x1-conv head."""
    return x[:, :, None, None]


def _critic(head: FanoganHead, x: torch.Tensor) -> torch.Tensor:
    return head.disc_out(head.disc_features(x)).flatten()


def _gradient_penalty(head: FanoganHead, real: torch.Tensor, fake: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    alpha = torch.rand(len(real), 1, 1, 1, generator=gen).to(real.device)
    mix = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(_critic(head, mix).sum(), mix, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def train_gan(head: FanoganHead, data: torch.Tensor, c: fanogan.FanoganConfig, gen: torch.Generator,
              progress: Progress) -> dict[str, float]:
    """Phase 1 on standardised patches ``data`` [P, D]; returns the last critic and generator losses."""
    d_params = list(head.disc_features.parameters()) + list(head.disc_out.parameters())
    opt_d = torch.optim.Adam(d_params, lr=c.lr, betas=(0.5, 0.9))
    opt_g = torch.optim.Adam(head.generator.parameters(), lr=c.lr, betas=(0.5, 0.9))
    dev = data.device
    loss_d = loss_g = torch.zeros(())
    for step in range(c.gan_steps):
        for _ in range(c.n_critic):
            real = _as_maps(data[torch.randint(len(data), (c.batch_size,), generator=gen).to(dev)])
            noise = torch.randn(c.batch_size, c.latent_dim, 1, 1, generator=gen).to(dev)
            with torch.no_grad():
                fake = head.generator(noise)
            loss_d = _critic(head, fake).mean() - _critic(head, real).mean()
            if c.gp_weight:
                loss_d = loss_d + c.gp_weight * _gradient_penalty(head, real, fake, gen)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        noise = torch.randn(c.batch_size, c.latent_dim, 1, 1, generator=gen).to(dev)
        loss_g = -_critic(head, head.generator(noise)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if step % 50 == 49:
            progress.update(50)
    return {"critic": float(loss_d.detach()), "generator": float(loss_g.detach())}


def train_encoder(head: FanoganHead, data: torch.Tensor, c: fanogan.FanoganConfig, gen: torch.Generator,
                  progress: Progress) -> float:
    """Phase 2: the izi_f loss (= the head's own score) with G and the critic frozen."""
    for p in list(head.generator.parameters()) + list(head.disc_features.parameters()) + list(head.disc_out.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam(head.encoder.parameters(), lr=c.encoder_lr)
    loss = torch.zeros(())
    for step in range(c.encoder_steps):
        x = _as_maps(data[torch.randint(len(data), (c.batch_size,), generator=gen).to(data.device)])
        loss = head.residuals(x, head.generator(head.encoder(x))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 49:
            progress.update(50)
    return float(loss.detach())


def fit(features: np.ndarray, config: fanogan.Config, seed: int, progress: Progress) -> fanogan.State:
    """features float32 [N, D, h, w] -> the state: the head's description and weights (``head.*``)."""
    c = config.fanogan
    d = features.shape[1]
    patches = _patches(features, c.max_patches, seed)
    mean, std = feature_stats(patches)
    dev = training_device()
    progress.total(c.gan_steps + c.encoder_steps)
    with deterministic(seed, c.threads):
        head = standardised_head(FanoganHead(d, c.latent_dim, c.hidden, c.disc_hidden), mean, std, dev)
        gen = torch.Generator().manual_seed(seed)
        data = ((torch.from_numpy(patches) - torch.from_numpy(mean)) / torch.from_numpy(std)).to(dev)
        losses = train_gan(head.train(), data, c, gen, progress)
        with torch.no_grad():  # kappa per unit of the critic's feature energy on golden patches
            sample = _as_maps(data[torch.randint(len(data), (4096,), generator=gen).to(dev)])
            energy = float((head.disc_features(sample) ** 2).mean())
        head.kappa.fill_(c.kappa / max(energy, 1e-12))
        losses["encoder"] = train_encoder(head, data, c, gen, progress)
    head = head.cpu().eval()
    description = fanogan.FanoganHeadDescription(in_dim=int(d), latent_dim=c.latent_dim, hidden=c.hidden,
                                                 disc_hidden=c.disc_hidden)
    params = fanogan.Params(head=description, smoothing_sigma=config.smoothing_sigma, kappa=c.kappa,
                            patches_seen=int(len(patches)), gan_steps=c.gan_steps, encoder_steps=c.encoder_steps,
                            feature_dim=int(d), final_losses={k: round(v, 6) for k, v in losses.items()})
    return fanogan.State(params, head_arrays(head))
