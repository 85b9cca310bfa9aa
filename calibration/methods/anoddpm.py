"""Fitting AnoDDPM (inspector/methods/anoddpm.py) on golden feature maps: a noise predictor
trained DDPM-style (Ho et al. 2020) with simplex instead of Gaussian noise (Wyatt et al. 2022):
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t uniform in 1..T, loss = mean (eps_hat - eps)^2.

Simplex fields cost ~3 ms each here, too slow to draw per sample: a bank of fields is drawn once
(seeded) and each sample takes a random channel pick, shift and flip of it. The scoring noise
(the head's ``noise`` buffer) is one more field drawn after training. More than one denoising step
is refused without CUDA unless ``allow_cpu`` (and, before that, on a CPU engine by calibrate:
inspector/methods/anoddpm.py ``check_calibration_engine``).
"""
from __future__ import annotations

import numpy as np
import torch

from calibration.methods import Progress
from calibration.methods.simplex import simplex_noise
from calibration.methods.training import deterministic, feature_stats, standardised_head, training_device
from engines.backbones.heads import AnoDdpmHead, head_arrays
from inspector.errors import InspectorError
from inspector.methods import anoddpm
from inspector.methods.anoddpm import ddim_schedule

BANK_FIELDS = 256  # simplex fields in the training bank (each [2h, 2w])


def alpha_bars(diffusion_steps: int) -> np.ndarray:
    """abar_t for t = 0..T (abar_0 = 1), linear betas 1e-4..0.02 scaled to T (Ho et al.)."""
    betas = np.linspace(1e-4 * 1000 / diffusion_steps, 0.02 * 1000 / diffusion_steps, diffusion_steps)
    return np.concatenate([[1.0], np.cumprod(1.0 - betas)])


class NoiseBank:
    """Random crops (shift, flip, channel pick) of a seeded bank of simplex fields."""

    def __init__(self, rng: np.random.Generator, dim: int, hw: tuple[int, int], c: anoddpm.AnoDdpmConfig):
        self.h, self.w = hw
        self.dim = dim
        self.fields = torch.from_numpy(simplex_noise(rng, (BANK_FIELDS, 2 * self.h, 2 * self.w), c.noise_frequency,
                                                     c.octaves))

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        out = torch.empty(n, self.dim, self.h, self.w)
        for k in range(n):
            pick = torch.randint(BANK_FIELDS, (self.dim,), generator=gen)
            dy, dx = (int(v) for v in torch.randint(self.h, (2,), generator=gen))
            crop = self.fields[pick, dy:dy + self.h, dx:dx + self.w]
            out[k] = crop.flip(-1) if bool(torch.randint(2, (1,), generator=gen)) else crop
        return out / out.flatten(1).std(1).clamp_min(1e-6)[:, None, None, None]


def fit(features: np.ndarray, config: anoddpm.Config, seed: int, progress: Progress) -> anoddpm.State:
    """features float32 [N, D, h, w] -> the state: the head's description and weights (``head.*``)."""
    c = config.anoddpm
    dev = training_device()
    if dev.type != "cuda" and c.denoise_steps > anoddpm.CPU_MAX_STEPS and not c.allow_cpu:
        raise InspectorError(f"{anoddpm.gpu_only(c.denoise_steps)} (calibration found no CUDA device)")
    if c.t_lambda > c.diffusion_steps:
        raise InspectorError(f"scorer.anoddpm.t_lambda {c.t_lambda} is beyond diffusion_steps {c.diffusion_steps}")
    n, d, h, w = features.shape
    mean, std = feature_stats(features.transpose(0, 2, 3, 1).reshape(-1, d))
    rng = np.random.default_rng(seed)
    bank = NoiseBank(rng, d, (h, w), c)
    abar = torch.from_numpy(alpha_bars(c.diffusion_steps)).float()
    schedule = ddim_schedule(c.t_lambda, c.denoise_steps)
    steps = len(schedule) - 1
    progress.total(c.train_steps)
    with deterministic(seed, c.threads):
        head = standardised_head(AnoDdpmHead(d, c.width, steps, (h, w)), mean, std, dev)
        data = ((torch.from_numpy(np.ascontiguousarray(features, np.float32)) - head.norm.mean.cpu())
                / head.norm.std.cpu())
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(head.denoiser.parameters(), lr=c.lr)
        loss = torch.zeros(())
        for step in range(c.train_steps):
            x0 = data[torch.randint(n, (c.batch_size,), generator=gen)]
            t = torch.randint(1, c.diffusion_steps + 1, (c.batch_size,), generator=gen)
            eps = bank.draw(c.batch_size, gen)
            a = abar[t][:, None, None, None]
            xt = (a.sqrt() * x0 + (1 - a).sqrt() * eps).to(dev)
            loss = ((head.denoiser(xt, t.float().to(dev)) - eps.to(dev)) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.update(1)
        head.noise.copy_(bank.draw(1, gen).to(dev))
        head.timesteps.copy_(torch.from_numpy(schedule[:-1].astype(np.float32)))
        head.alpha_bars.copy_(abar[torch.from_numpy(schedule)])
    head = head.cpu().eval()
    description = anoddpm.AnoDdpmHeadDescription(in_dim=int(d), width=c.width, steps=steps, grid_hw=[int(h), int(w)])
    params = anoddpm.Params(head=description, smoothing_sigma=config.smoothing_sigma, t_lambda=c.t_lambda,
                            diffusion_steps=c.diffusion_steps, train_steps=c.train_steps, feature_dim=int(d),
                            final_loss=round(float(loss.detach()), 6))
    return anoddpm.State(params, head_arrays(head))
