"""Tiny inline-SVG charts for the self-contained HTML reports (no JS, no external files).

Pure string building; lives beside the queries whose results it draws (used by `inspector report`
and calibration/report.py)."""
from __future__ import annotations

from html import escape
from typing import Optional, Sequence


def _nice(v: float) -> str:
    return f"{v:.3g}"


def bar_chart(labels: Sequence[str], values: Sequence[float], *, width: int = 640, height: int = 220,
              colour: str = "#c0392b", title: str = "") -> str:
    """Vertical bars with their values on top. Bars are at most 48 px wide (three sources are
    three bars, not three slabs); labels are turned 40 degrees only when they would collide."""
    n = max(len(values), 1)
    top = max(list(values) + [1e-12])
    pad_l, pad_b, pad_t = 48, 60, 28
    slot = (width - pad_l - 10) / n
    bw = max(min(slot * 0.8, 48.0), 1.0)
    turn = n > 12 or any(len(str(lab)) * 6.5 > slot for lab in labels)
    base_y = height - pad_b
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<title>{escape(title)}</title>',
             f'<text x="{pad_l}" y="14" font-size="12">{escape(title)}</text>']
    for i, (lab, v) in enumerate(zip(labels, values)):
        h = (height - pad_b - pad_t) * (v / top)
        cx = pad_l + (i + 0.5) * slot
        parts.append(f'<rect x="{cx - bw / 2:.1f}" y="{base_y - h:.1f}" width="{bw:.1f}" '
                     f'height="{h:.1f}" fill="{colour}"><title>{escape(lab)}: {_nice(v)}</title></rect>')
        if n <= 40:
            parts.append(f'<text x="{cx:.1f}" y="{base_y - h - 4:.1f}" font-size="10" text-anchor="middle">'
                         f'{_nice(v)}</text>')
            if turn:
                parts.append(f'<text x="{cx:.1f}" y="{base_y + 12}" font-size="10" '
                             f'transform="rotate(40 {cx:.1f} {base_y + 12})">{escape(lab)}</text>')
            else:
                parts.append(f'<text x="{cx:.1f}" y="{base_y + 14}" font-size="11" text-anchor="middle">'
                             f'{escape(lab)}</text>')
    parts.append(f'<text x="{pad_l - 6}" y="{pad_t + 4}" font-size="10" text-anchor="end">{_nice(top)}</text>')
    parts.append(f'<text x="{pad_l - 6}" y="{base_y}" font-size="10" text-anchor="end">0</text>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{base_y}" stroke="#999"/>')
    parts.append(f'<line x1="{pad_l}" y1="{base_y}" x2="{width - 10}" y2="{base_y}" stroke="#333"/>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(labels: Sequence[str], values: Sequence[Optional[float]], *, width: int = 640, height: int = 220,
               y_min: float = 0.0, y_max: float = 100.0, title: str = "", colour: str = "#2c7fb8") -> str:
    pad_l, pad_b, pad_t = 48, 40, 20
    n = len(values)
    span = (y_max - y_min) or 1.0

    def xy(i: int, v: float) -> tuple[float, float]:
        x = pad_l + (i / max(n - 1, 1)) * (width - pad_l - 10)
        y = height - pad_b - (v - y_min) / span * (height - pad_b - pad_t)
        return x, y

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<title>{escape(title)}</title>', f'<text x="{pad_l}" y="14" font-size="12">{escape(title)}</text>',
             f'<text x="{pad_l - 6}" y="{pad_t + 4}" font-size="10" text-anchor="end">{_nice(y_max)}</text>',
             f'<text x="{pad_l - 6}" y="{height - pad_b}" font-size="10" text-anchor="end">{_nice(y_min)}</text>',
             f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}" stroke="#999"/>',
             f'<line x1="{pad_l}" y1="{height - pad_b}" x2="{width - 10}" y2="{height - pad_b}" stroke="#333"/>']
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if pts:
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in pts))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for i, v in pts:
            x, y = xy(i, v)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}">'
                         f'<title>{escape(labels[i])}: {_nice(v)}</title></circle>')
    if labels:
        parts.append(f'<text x="{pad_l}" y="{height - pad_b + 14}" font-size="10">{escape(labels[0])}</text>')
        parts.append(f'<text x="{width - 10}" y="{height - pad_b + 14}" font-size="10" text-anchor="end">'
                     f'{escape(labels[-1])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: Sequence[float], *, bins: int = 40, lo: float, hi: float, marks: Sequence[tuple[float, str, str]] = (),
              overlay: Optional[Sequence[float]] = None, width: int = 720, height: int = 260, title: str = "") -> str:
    """Bars of ``values`` (blue) and optionally ``overlay`` (red, outline), vertical lines at
    ``marks`` = (x, label, colour)."""
    import numpy as np

    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    c1 = np.histogram(np.clip(values, lo, hi), edges)[0] if len(values) else np.zeros(bins)
    c2 = np.histogram(np.clip(overlay, lo, hi), edges)[0] if overlay is not None and len(overlay) else None
    top = max(int(c1.max()) if len(c1) else 0, int(c2.max()) if c2 is not None else 0, 1)
    pad_l, pad_b, pad_t = 40, 30, 24
    pw, ph = width - pad_l - 10, height - pad_b - pad_t
    bw = pw / bins

    def x_of(v: float) -> float:
        return pad_l + (v - lo) / (hi - lo) * pw

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<title>{escape(title)}</title>', f'<text x="{pad_l}" y="14" font-size="12">{escape(title)}</text>']
    for i, c in enumerate(c1):
        h = ph * c / top
        parts.append(f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="#4a90d9" fill-opacity="0.8"/>')
    if c2 is not None:
        for i, c in enumerate(c2):
            h = ph * c / top
            parts.append(f'<rect x="{pad_l + i * bw:.1f}" y="{pad_t + ph - h:.1f}" width="{max(bw - 1, 1):.1f}" '
                         f'height="{h:.1f}" fill="#d9534f" fill-opacity="0.45" stroke="#d9534f"/>')
    for v, label, colour in marks:
        x = x_of(min(max(v, lo), hi))
        parts.append(f'<line class="mark" x1="{x:.1f}" y1="{pad_t - 4}" x2="{x:.1f}" y2="{pad_t + ph}" '
                     f'stroke="{colour}" stroke-width="2" stroke-dasharray="5,3"/>'
                     # a mark in the right third is labelled on its left, so the label is not cut off
                     + (f'<text x="{x - 3:.1f}" y="{pad_t + 8}" font-size="11" fill="{colour}" text-anchor="end">'
                        if x > pad_l + 2 * pw / 3 else
                        f'<text x="{x + 3:.1f}" y="{pad_t + 8}" font-size="11" fill="{colour}">')
                     + f'{escape(label)}</text>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#333"/>')
    parts.append(f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + ph}" stroke="#999"/>')
    for k in range(5):  # five ticks: the ends and three between
        v = lo + (hi - lo) * k / 4
        anchor = "start" if k == 0 else ("end" if k == 4 else "middle")
        parts.append(f'<line x1="{x_of(v):.1f}" y1="{pad_t + ph}" x2="{x_of(v):.1f}" y2="{pad_t + ph + 4}" '
                     f'stroke="#333"/><text x="{x_of(v):.1f}" y="{height - 8}" font-size="10" '
                     f'text-anchor="{anchor}">{_nice(v)}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + 8}" font-size="10" text-anchor="end">{top}</text>')
    parts.append(f'<text x="{pad_l - 4}" y="{pad_t + ph}" font-size="10" text-anchor="end">0</text>')
    parts.append("</svg>")
    return "".join(parts)
