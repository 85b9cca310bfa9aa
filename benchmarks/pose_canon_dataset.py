"""Canonicalise the pose of each image of an MVTec-layout set into a new set (issue 12 experiment).

Foreground by Otsu (the part is the minority side), largest component, moments -> principal
axis, rotate so the axis is horizontal, the wider end (screw head) on the left, centroid to the
image centre, border filled with the median background. Masks (ground_truth) get the same warp.

usage: python benchmarks/pose_canon_dataset.py SRC DST [--sheet out.png] [--band Y0 Y1]

--band keeps only rows Y0..Y1 of each canonical image (the part's band, written as PNG).
CANON_FILL=median fills the uncovered border with the flat median background (the first
experiment's polygons); the default mirrors the background with the part inpainted.
Research tool for issue 12 (docs/BENCHMARKS.md, "pose normalisation"); the package's version is
preprocess.align motion pose.
"""
import argparse
import json
import math
import os
import sys

import cv2
import numpy as np


FILL = os.environ.get("CANON_FILL", "reflect")


def part_mask(grey):
    blur = cv2.GaussianBlur(grey, (5, 5), 0)
    _, m = cv2.threshold(blur, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if (m > 0).mean() > 0.5:  # the part is the smaller side
        m = 255 - m
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m)
    if n < 2:
        return None
    big = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (lab == big).astype(np.uint8)


def pose(grey):
    """-> (cx, cy, angle_deg to rotate by so the axis is horizontal and the wide end left, info)"""
    m = part_mask(grey)
    if m is None:
        return None
    mo = cv2.moments(m, binaryImage=True)
    cx, cy = mo["m10"] / mo["m00"], mo["m01"] / mo["m00"]
    theta = 0.5 * math.atan2(2 * mo["mu11"], mo["mu20"] - mo["mu02"])  # axis angle (image coords, y down)
    ys, xs = np.nonzero(m)
    u = (xs - cx) * math.cos(theta) + (ys - cy) * math.sin(theta)  # along the axis
    v = -(xs - cx) * math.sin(theta) + (ys - cy) * math.cos(theta)  # across
    lo, hi = np.percentile(u, [1, 99])
    span = hi - lo
    # width of each end (the outer 20% of the length): the head is wider
    end_lo = u < lo + 0.2 * span
    end_hi = u > hi - 0.2 * span
    w_lo = np.percentile(v[end_lo], 98) - np.percentile(v[end_lo], 2)
    w_hi = np.percentile(v[end_hi], 98) - np.percentile(v[end_hi], 2)
    ang = math.degrees(theta)
    # centre on the middle of the part's extent along and across the axis (the centroid leans to
    # the heavy head and pushes the tip out of the frame)
    u0, u1 = float(u.min()), float(u.max())
    v0, v1 = float(np.percentile(v, 0.5)), float(np.percentile(v, 99.5))
    um, vm = 0.5 * (u0 + u1), 0.5 * (v0 + v1)
    cx, cy = cx + um * math.cos(theta) - vm * math.sin(theta), cy + um * math.sin(theta) + vm * math.cos(theta)
    if w_hi > w_lo:  # wide end at +u: turn by 180 so it lands on the left
        ang += 180.0
    lam = np.linalg.eigvalsh(np.array([[mo["mu20"], mo["mu11"]], [mo["mu11"], mo["mu02"]]]))
    return cx, cy, ang, {"elong": float(math.sqrt(lam[1] / max(lam[0], 1e-9))), "w_lo": float(w_lo), "w_hi": float(w_hi), "ratio": float(max(w_lo, w_hi) / max(min(w_lo, w_hi), 1e-6))}


def warp_matrix(cx, cy, ang, shape):
    h, w = shape
    # rotate about the centroid by ang (cv2: positive = counter-clockwise in the displayed image,
    # which undoes an axis at +ang measured with y down), then move the centroid to the centre
    M = cv2.getRotationMatrix2D((cx, cy), ang, 1.0)
    M[0, 2] += (w - 1) / 2.0 - cx
    M[1, 2] += (h - 1) / 2.0 - cy
    return M


def canonicalise(img, M, fill, interp=cv2.INTER_LINEAR):
    h, w = img.shape[:2]
    return cv2.warpAffine(img, M, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=fill)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--sheet")
    ap.add_argument("--band", type=int, nargs=2)
    a = ap.parse_args()
    log = {}
    sheet = []
    for root, _, files in os.walk(a.src):
        rel = os.path.relpath(root, a.src)
        if rel.startswith("ground_truth"):
            continue
        for f in sorted(files):
            if not f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")):
                continue
            src = os.path.join(root, f)
            img = cv2.imread(src, cv2.IMREAD_UNCHANGED)
            grey = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            p = pose(grey)
            if p is None:
                print("no part:", src, file=sys.stderr)
                M = np.eye(2, 3)
                info = {}
            else:
                cx, cy, ang, info = p
                M = warp_matrix(cx, cy, ang, grey.shape)
                info.update(cx=cx, cy=cy, ang=ang)
            m = part_mask(grey)
            bg = np.median(img[m == 0], axis=0) if m is not None else np.median(img.reshape(-1, img.shape[-1] if img.ndim == 3 else 1), axis=0)
            fill = tuple(float(x) for x in np.atleast_1d(bg)) if img.ndim == 3 else float(np.atleast_1d(bg)[0])
            if FILL == "median" or m is None:
                out = canonicalise(img, M, fill)
            else:  # the uncovered border: the background (part inpainted) mirrored, no edges
                dil = cv2.dilate(m, np.ones((15, 15), np.uint8))
                bgimg = cv2.inpaint(img, dil * 255, 5, cv2.INPAINT_TELEA)
                h, w = img.shape[:2]
                out = cv2.warpAffine(img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                back = cv2.warpAffine(bgimg, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
                valid = cv2.warpAffine(np.full((h, w), 255, np.uint8), M, (w, h), flags=cv2.INTER_NEAREST,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                valid = cv2.erode(valid, np.ones((3, 3), np.uint8))
                out = np.where((valid > 0) if img.ndim == 2 else (valid > 0)[..., None], out, back)
            dst = os.path.join(a.dst, rel, f)
            if a.band:
                out = out[a.band[0]:a.band[1]]
                dst = os.path.splitext(dst)[0] + ".png"
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            cv2.imwrite(dst, out, [cv2.IMWRITE_JPEG_QUALITY, 98] if dst.lower().endswith(".jpg") else [])
            log[os.path.join(rel, f)] = info
            if rel.startswith("test") and len(sheet) < 200:
                sheet.append((os.path.join(rel, f), grey, cv2.cvtColor(out, cv2.COLOR_BGR2GRAY) if out.ndim == 3 else out))
            # masks: same warp, nearest neighbour
            parts = rel.split(os.sep)
            if len(parts) == 2 and parts[0] == "test" and parts[1] != "good":
                stem = os.path.splitext(f)[0]
                mp = os.path.join(a.src, "ground_truth", parts[1], stem + "_mask.png")
                if os.path.exists(mp):
                    mask = cv2.imread(mp, cv2.IMREAD_GRAYSCALE)
                    mo = canonicalise(mask, M, 0, cv2.INTER_NEAREST)
                    mo = mo[a.band[0]:a.band[1]] if a.band else mo
                    md = os.path.join(a.dst, "ground_truth", parts[1], stem + "_mask.png")
                    os.makedirs(os.path.dirname(md), exist_ok=True)
                    cv2.imwrite(md, mo)
    with open(os.path.join(a.dst, "canon_log.json"), "w") as fh:
        json.dump(log, fh, indent=0)
    if a.sheet:
        # contact sheet: canonicalised test images, 10 per row, 128 px
        tiles = [cv2.resize(o, (128, 128)) for _, _, o in sheet[::2][:80]]
        rows = [np.hstack(tiles[i:i + 10]) for i in range(0, len(tiles) - len(tiles) % 10, 10)]
        cv2.imwrite(a.sheet, np.vstack(rows))
    print("images:", len(log))


if __name__ == "__main__":
    main()
