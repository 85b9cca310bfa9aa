"""Few golden samples: expand each golden image with augmented copies: small shifts and
rotations (within the line's positioning tolerance) and photometric jitter (brightness,
contrast, sensor noise). Copies are named ``<original>#aug<k>`` so calibration can keep the
held-out (threshold-setting) images original and drop the copies of held-out images from the
fit (no leakage of a held-out image into the fit through its copies)."""
from __future__ import annotations

import hashlib
from typing import Optional

import cv2
import numpy as np

from calibration.golden import GoldenSet

AUG_MARK = "#aug"


def original_name(name: str) -> str:
    """The golden image a (possibly augmented) name comes from."""
    return name.split(AUG_MARK, 1)[0]


def is_augmented(name: str) -> bool:
    return AUG_MARK in name


def origin_ids(names: list[str]) -> np.ndarray:
    """int64 [N]: for each (possibly augmented) name, the index of its original among the
    originals in order of first appearance; a copy shares its original's id. What a fit gets as
    ``groups`` so it never treats a copy as an image independent of its original."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(original_name(n), len(ids)) for n in names], np.int64)


def jitter(image: np.ndarray, rng: np.random.Generator, config) -> np.ndarray:
    """One augmented copy of ``image`` (BGR or grey uint8, any size), same shape and dtype.
    config: settings.AugmentConfig."""
    h, w = image.shape[:2]
    angle = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)
    dx, dy = rng.uniform(-config.max_shift_px, config.max_shift_px, size=2)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, 1.0)
    m[:, 2] += (dx, dy)
    out = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    x = out.astype(np.float32)
    gain = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    offset = rng.uniform(-config.brightness, config.brightness) * 255.0
    x = (x - x.mean()) * gain + x.mean() + offset
    if config.noise_sigma > 0:
        x += rng.normal(0.0, config.noise_sigma, size=x.shape).astype(np.float32)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment_golden(golden: GoldenSet, n: int, seed: int, config: Optional[object] = None) -> GoldenSet:
    """The originals followed by ``n`` jittered copies of each (deterministic for a seed).
    config: settings.AugmentConfig (None: its defaults)."""
    if config is None:
        from inspector.settings import AugmentConfig

        config = AugmentConfig()
    if n <= 0:
        return golden
    rng = np.random.default_rng(seed)
    names, images = list(golden.names), list(golden.images)
    for name, img in zip(golden.names, golden.images):
        for k in range(n):
            names.append(f"{name}{AUG_MARK}{k:02d}")
            images.append(jitter(img, rng, config))
    tag = f"{golden.sha256}|augment {n} seed {seed} {config!r}"
    return GoldenSet(names, images, list(golden.skipped), hashlib.sha256(tag.encode()).hexdigest())
