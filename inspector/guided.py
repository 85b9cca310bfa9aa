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


def _smaller(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return x if x.shape[::-1] == size else cv2.resize(x, size, interpolation=cv2.INTER_AREA)


def _larger(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return x if x.shape[::-1] == size else cv2.resize(x, size, interpolation=cv2.INTER_LINEAR)


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
    i_s, p_s = _smaller(I, small), _smaller(p, small)
    r = max(1, round(radius * small[0] / w))
    mean_i, mean_p = _box(i_s, r), _box(p_s, r)
    var_i = _box(i_s * i_s, r) - mean_i * mean_i
    a = (_box(i_s * p_s, r) - mean_i * mean_p) / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return _larger(_box(a, r), (w, h)) * I + _larger(_box(b, r), (w, h))


def refine_map(guide: np.ndarray, pixel_map: np.ndarray, radius: int, eps: float, subsample: int = 1) -> np.ndarray:
    """The map guided by its frame (``guided_filter``), kept at every pixel within the range the
    map itself has in that pixel's window: the refinement moves the map's values onto the
    frame's edges but invents none (a glint where the window's fit is steep would otherwise rise
    above the map's own peak, and the pixel threshold is set on the maps' maxima)."""
    q = guided_filter(guide, pixel_map, radius, eps, subsample)
    h, w = pixel_map.shape
    small = (max(1, round(w / subsample)), max(1, round(h / subsample)))
    p_s = _smaller(pixel_map.astype(np.float32, copy=False), small)
    r = max(1, round(radius * small[0] / w))
    window = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1))
    lo = _larger(cv2.erode(p_s, window, borderType=cv2.BORDER_REPLICATE), (w, h))
    hi = _larger(cv2.dilate(p_s, window, borderType=cv2.BORDER_REPLICATE), (w, h))
    return np.clip(q, lo, hi, out=q)
