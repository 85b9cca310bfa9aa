"""Edge-aware refinement of an anomaly map, guided by the frame it was made from.

A patch feature sees a window of its neighbours (the 3x3 aggregation of stride-8 cells), so a
defect lights every cell whose window touches it and the map spreads ~3 cells past the defect's
edge, over normal pixels. He, Sun and Tang's guided filter (ECCV 2010 / TPAMI 2013) re-fits the
map in every window as a linear function of the grey frame, ``q = a * I + b``: where the frame has
an edge inside the window the map's step is moved onto that edge, where it is flat the map is
only averaged. With the window as wide as the features' own spread (``radius`` cells) the map
mass that leaked past an object's boundary is pulled back inside it.

O(1) per pixel (box filters, any radius); numpy + OpenCV's boxFilter (opencv-contrib's ximgproc
is not a dependency).
"""
from __future__ import annotations

import cv2
import numpy as np

_GREY = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601 luma of RGB


def grey_guide(image: np.ndarray) -> np.ndarray:
    """A work image as ``Preprocessor.prepare`` makes it (float32 CHW RGB in [0, 1]) or an
    [H, W] grey one -> float32 [H, W] grey in [0, 1]."""
    image = np.asarray(image, np.float32)
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[0] in (1, 3):
        if image.shape[0] == 1:
            return image[0]
        # plane by plane: a BLAS call (tensordot) costs more than it computes, and waits on its threads
        return cv2.addWeighted(cv2.addWeighted(image[0], float(_GREY[0]), image[1], float(_GREY[1]), 0.0), 1.0,
                               image[2], float(_GREY[2]), 0.0)
    raise ValueError(f"a guide image must be [H, W] or [C, H, W] (C 1 or 3), got {list(image.shape)}")


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """He et al.'s grey-guided filter of ``src`` [H, W] by ``guide`` [H, W] (float, [0, 1]) over
    (2 radius + 1)^2 windows; ``eps`` (guide variance units) is how weak an edge may be before the
    window is only averaged. Linear in ``src``: the map's units are kept.

    ``subsample`` s > 1: the fast guided filter (He and Sun, arXiv 1505.00996): the window's
    linear coefficients are fitted on an s-times smaller image and upsampled, then applied to the
    full-resolution guide, so edges stay at full resolution for ~1/s^2 of the box filtering. A map
    with one value per 8-pixel cell loses nothing at s = 4 (docs/BENCHMARKS.md)."""
    if guide.shape != src.shape:
        raise ValueError(f"guide {guide.shape} and map {src.shape} differ in size")
    I, p = guide.astype(np.float32, copy=False), src.astype(np.float32, copy=False)
    h, w = I.shape
    small = (max(1, round(w / subsample)), max(1, round(h / subsample)))
    if subsample > 1 and small != (w, h):
        i_s = cv2.resize(I, small, interpolation=cv2.INTER_AREA)
        p_s = cv2.resize(p, small, interpolation=cv2.INTER_AREA)
        r = max(1, round(radius / subsample))
    else:
        i_s, p_s, r = I, p, radius
    mean_i, mean_p = _box(i_s, r), _box(p_s, r)
    var_i = _box(i_s * i_s, r) - mean_i * mean_i
    a = (_box(i_s * p_s, r) - mean_i * mean_p) / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    mean_a, mean_b = _box(a, r), _box(b, r)
    if mean_a.shape != I.shape:
        mean_a = cv2.resize(mean_a, (w, h), interpolation=cv2.INTER_LINEAR)
        mean_b = cv2.resize(mean_b, (w, h), interpolation=cv2.INTER_LINEAR)
    return mean_a * I + mean_b
