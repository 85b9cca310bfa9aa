"""The Judge: image score vs the calibrated threshold -> pass/fail; the pixel map thresholded
into defect regions, mapped back to original-image pixels."""
from __future__ import annotations

import math
from typing import Optional

import cv2
import numpy as np

from inspector.types import Region, RoiTransform, VerdictKind


class Judge:
    def __init__(self, image_threshold: float, pixel_threshold: Optional[float], *,
                 min_region_fraction: float = 0.001, max_regions: int = 32, input_area: Optional[int] = None):
        self.image_threshold = float(image_threshold)
        self.pixel_threshold = None if pixel_threshold is None else float(pixel_threshold)
        # blobs smaller than this share of the network input are noise (0.1%: 65 px at 256x256);
        # input_area: the network input's pixels, when the map is larger (tiled bundles), so a
        # small defect on a big work image is not dropped as noise
        self.min_region_fraction = min_region_fraction
        self.input_area = input_area
        self.max_regions = max_regions

    def decide(self, score: float) -> VerdictKind:
        # a score that is not a number (NaN compares False) must not pass a part
        return VerdictKind.FAIL if not math.isfinite(score) or score > self.image_threshold else VerdictKind.PASS

    def regions(self, pixel_map: Optional[np.ndarray], transform: RoiTransform) -> tuple[Region, ...]:
        """Connected components of ``pixel_map`` [H, W] (work-image coordinates) above the
        pixel threshold, largest peak first. If nothing crosses it (an image-level fail from a
        diffuse anomaly) the region around the peak at half its height is returned instead,
        so every fail points somewhere."""
        if pixel_map is None or self.pixel_threshold is None:
            return ()
        level = self.pixel_threshold
        peak = float(pixel_map.max())
        if peak <= level:
            floor = pixel_map
            if transform.align is not None:  # outside the registered part the map is the warp's 0 fill
                inside = pixel_map[pixel_map != 0]
                floor = inside if inside.size else pixel_map
            level = 0.5 * (peak + float(np.median(floor)))
        area = pixel_map.size if self.input_area is None else min(pixel_map.size, self.input_area)
        min_area = max(4, int(self.min_region_fraction * area))
        mask = (pixel_map > level).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        found: list[Region] = []
        for lab in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[lab])
            if area < min_area and n > 2:
                continue
            peak_score = float(pixel_map[labels == lab].max())
            found.append(_to_original(x, y, w, h, area, peak_score, transform))
        found.sort(key=lambda r: r.peak_score, reverse=True)
        return tuple(found[: self.max_regions])


def _to_original(x: int, y: int, w: int, h: int, area: int, peak: float, tr: RoiTransform) -> Region:
    ox = int(round(x / tr.scale_x)) + tr.roi_x
    oy = int(round(y / tr.scale_y)) + tr.roi_y
    ow = max(1, int(round(w / tr.scale_x)))
    oh = max(1, int(round(h / tr.scale_y)))
    oarea = max(1, int(round(area / (tr.scale_x * tr.scale_y))))
    return Region(ox, oy, ow, oh, oarea, peak)
