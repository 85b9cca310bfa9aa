"""2D simplex noise (Perlin 2001, after Gustavson's reference code), vectorised in numpy, summed
over octaves: AnoDDPM's noise (Wyatt et al., CVPRW 2022), whose low frequencies hide larger
defects than Gaussian noise does. One independent field per channel (a seeded permutation each)."""
from __future__ import annotations

import numpy as np

_GRAD = np.array([[1, 1], [-1, 1], [1, -1], [-1, -1], [1, 0], [-1, 0], [0, 1], [0, -1]], np.float64)
_F2 = 0.5 * (np.sqrt(3.0) - 1.0)
_G2 = (3.0 - np.sqrt(3.0)) / 6.0


def simplex2(x: np.ndarray, y: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Simplex noise at points (x, y) (same shapes), in about [-1, 1]; perm: 512 ints (a
    permutation of 0..255 twice)."""
    s = (x + y) * _F2
    i, j = np.floor(x + s), np.floor(y + s)
    t = (i + j) * _G2
    x0, y0 = x - (i - t), y - (j - t)
    i1 = (x0 > y0).astype(np.int64)
    j1 = 1 - i1
    corners = ((x0, y0, 0, 0), (x0 - i1 + _G2, y0 - j1 + _G2, i1, j1), (x0 - 1 + 2 * _G2, y0 - 1 + 2 * _G2, 1, 1))
    ii, jj = i.astype(np.int64) & 255, j.astype(np.int64) & 255
    out = np.zeros_like(x, dtype=np.float64)
    for cx, cy, di, dj in corners:
        g = _GRAD[perm[ii + di + perm[(jj + dj) & 511]] % 8]
        r = np.maximum(0.5 - cx * cx - cy * cy, 0.0)
        out += r ** 4 * (g[..., 0] * cx + g[..., 1] * cy)
    return 70.0 * out


def simplex_noise(rng: np.random.Generator, shape: tuple[int, int, int], frequency: float = 1 / 8,
                  octaves: int = 3, persistence: float = 0.6) -> np.ndarray:
    """float32 [C, h, w] of octave simplex noise, each channel standardised to mean 0, std 1
    (the diffusion's noise must have unit variance like the Gaussian it replaces)."""
    c, h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty(shape, np.float32)
    for k in range(c):
        perm = np.tile(rng.permutation(256), 2)
        off = rng.uniform(0, 256, 2)
        field = np.zeros((h, w))
        for o in range(octaves):
            f = frequency * 2 ** o
            field += persistence ** o * simplex2(xx * f + off[0], yy * f + off[1], perm)
        field -= field.mean()
        out[k] = field / max(field.std(), 1e-8)
    return out
