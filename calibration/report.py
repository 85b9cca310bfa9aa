"""The calibration report: one self-contained HTML file (inline SVG, base64 images) that shows
why the threshold is where it is: the held-out golden score histogram with the threshold line
(and defect scores when there were any), what it lets through (escape rates of synthetic defects
by size and kind), the images nearest the threshold with their heatmaps, stage times and a summary."""
from __future__ import annotations

import base64
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Optional, Sequence

from engines.atomicfile import atomic_write_bytes
from inspector.storage.charts import histogram


@dataclass(frozen=True)
class CalibrationReportData:
    heldout_scores: Sequence[float]  # image scores of the held-out golden images
    threshold: float  # the image threshold chosen
    pixel_threshold: Optional[float]
    expected_false_reject_rate: float  # share of good parts expected to fail (0..1)
    false_reject_upper_bound: Optional[float] = None  # its one-sided 95% upper bound (0..1)
    warnings: Sequence[str] = ()  # what calibrate warned about, one line each
    defect_scores: Optional[Sequence[float]] = None  # scores of known-defect images, when given
    # (image name, score, heatmap PNG path) of the images nearest the threshold
    near_threshold: Sequence[tuple[str, float, Optional[str]]] = ()
    stage_times: dict[str, float] = field(default_factory=dict)  # stage name -> seconds
    bundle_id: str = ""
    summary: dict[str, str] = field(default_factory=dict)
    false_reject_budget: Optional[float] = None
    detectability: Optional[dict] = None  # Detectability.to_json(): escape rates by size and kind
    auto: Optional[dict] = None  # calibrate --auto: the candidates compared and the one chosen
    key_picture: Optional[str] = None  # PNG path: a golden work image with the variant key's box drawn


def _png_data_uri(path: Optional[str]) -> Optional[str]:
    """Embed a PNG file as it is (no decoding, so no OpenCV needed here)."""
    if not path or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"\x89PNG"):
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _key_html(path: Optional[str]) -> str:
    """The variant key's box on a golden image (aligned_map.key_region), so it can be checked by eye."""
    uri = _png_data_uri(path)
    if uri is None:
        return ""
    return ('<h2>Variant key</h2><div class="near"><figure><img src="' + uri + '" alt="the variant key on a golden '
            'image"><figcaption>the map compares each frame with the golden images whose boxed region looks most '
            'like its own: the box should hold the mark that names the variant and nothing of what must match '
            'it</figcaption></figure></div>')


def _pct(rate: dict) -> str:
    if not rate or not rate.get("n"):
        return "-"
    return f'{100 * rate["found"] / rate["n"]:.0f} % <small>({rate["found"]}/{rate["n"]})</small>'


def _detectability_html(d: Optional[dict]) -> str:
    """The escape-rate table: share of synthetic defects found, by kind (rows) and size (columns)."""
    if not d:
        return "<p>not measured (calibration.synthetic_defects: 0)</p>"
    sizes = [r["size_px"] for r in d["by_size"]]

    def row(name: str, rates: list, bold: bool = False) -> str:
        at = {r["size_px"]: r for r in rates}
        cells = "".join(f"<td>{'<b>' if bold else ''}{_pct(at.get(s))}{'</b>' if bold else ''}</td>" for s in sizes)
        return f"<tr><th>{escape(name)}</th>{cells}</tr>"

    head = "<tr><th>defects found</th>" + "".join(f"<th>{s} px</th>" for s in sizes) + "</tr>"
    rows = [row(kind, rates) for kind, rates in d["by_kind"].items()] + [row("all kinds", d["by_size"], True)]
    real = d.get("real_defects")
    extra = (f"<p>Your defect images (--defects): {_pct(real)} found.</p>" if real else "")
    left_out = ", ".join(map(str, d.get("sizes_left_out") or []))
    left = f"<p>Left out (larger than half the image or ROI): {escape(left_out)} px.</p>" if left_out else ""
    return (f"<p>{escape(d['statement'])}.</p><table>{head}{''.join(rows)}</table>{extra}{left}"
            f"<p>Synthetic defects pasted into the held-out golden images (which the model was not fitted on), "
            f"each changing its pixels by at least {d['min_contrast']:g} grey levels on average; sizes in frame "
            f"pixels; found = image score above the threshold. The rest escape.</p>")


def _auto_html(auto: Optional[dict]) -> str:
    """calibrate --auto's comparison: each candidate's share of synthetic (and real) defects found."""
    if not auto:
        return ""
    rows = "".join(
        f"<tr><th>{'<b>' if t['name'] == auto['chosen'] else ''}{escape(t['name'])}{'</b>' if t['name'] == auto['chosen'] else ''}"
        f"{' (pose normalised)' if t.get('pose_normalised') else ''}</th>"
        f"<td>{t['synthetic_found'] * 100:.0f}% of {t['synthetic_n']}</td><td>{t['synthetic_found_smallest'] * 100:.0f}%</td>"
        f"<td>{'-' if t['real_found'] is None else format(t['real_found'] * 100, '.0f') + '%'}</td>"
        f"<td>{t['seconds']:.1f} s</td></tr>" for t in auto["trials"])
    return (f"<h2>Method chosen by calibrate --auto</h2><p>Chosen: <b>{escape(auto['chosen'])}</b>; criterion: "
            f"{escape(auto['criterion'])}.</p><table><tr><th>candidate</th><th>synthetic defects found</th>"
            f"<th>smallest size found</th><th>your defects found</th><th>time</th></tr>{rows}</table>")


def render_calibration_report(data: CalibrationReportData) -> str:
    scores = [float(s) for s in data.heldout_scores if s is not None and math.isfinite(s)]
    defects = [float(s) for s in (data.defect_scores or []) if s is not None and math.isfinite(s)]
    everything = scores + defects + [data.threshold]
    lo, hi = min(everything), max(everything)
    margin = (hi - lo) * 0.05 or 1.0
    svg = histogram(scores, lo=lo - margin, hi=hi + margin, overlay=defects if defects else None,
                    marks=[(data.threshold, f"threshold {data.threshold:.4g}", "#d62728")],
                    title="held-out golden scores" + (" (blue) and defect scores (red)" if defects else ""))
    over = sum(1 for s in scores if s > data.threshold)
    caught = sum(1 for s in defects if s > data.threshold)
    rows = {
        "bundle": data.bundle_id,
        "image threshold": f"{data.threshold:.6g}",
        "pixel threshold": "-" if data.pixel_threshold is None else f"{data.pixel_threshold:.6g}",
        "expected false-reject rate": f"{100 * data.expected_false_reject_rate:.2f} %"
        + (f" (budget {100 * data.false_reject_budget:g} %)" if data.false_reject_budget is not None else ""),
        "held-out golden images": str(len(scores)),
        "held-out golden above threshold": f"{over} ({100 * over / len(scores):.1f} %)" if scores else "-",
    }
    if data.false_reject_upper_bound is not None:
        rows["false-reject rate, 95% upper bound (what the held-out images alone show)"] = \
            f"{100 * data.false_reject_upper_bound:.2f} %"
    if defects:
        rows["defect images caught"] = f"{caught} of {len(defects)} ({100 * caught / len(defects):.1f} %)"
    rows.update({str(k): str(v) for k, v in data.summary.items()})
    summary = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows.items())
    times = "".join(f"<tr><th>{escape(k)}</th><td>{v:.2f} s</td></tr>" for k, v in data.stage_times.items())
    cards = []
    for name, score, heat in data.near_threshold:
        uri = _png_data_uri(heat)
        img = (f'<img src="{uri}" alt="heatmap of {escape(name)}">' if uri
               else '<div class="noimg">(no heatmap)</div>')
        side = "above" if score > data.threshold else "below"
        cards.append(f'<figure>{img}<figcaption>{escape(name)}<br>score {score:.4g} ({side} threshold)'
                     '</figcaption></figure>')
    written = datetime.now(timezone.utc).isoformat(timespec="seconds")
    warnings = "".join(f'<p class="warning">warning: {escape(w)}</p>' for w in data.warnings)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Calibration {escape(data.bundle_id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:3px 8px;text-align:left}}th{{background:#f4f4f4}}
.near figure{{display:inline-block;margin:6px 12px 6px 0;vertical-align:top;font-size:12px}}
.near img{{max-width:240px;max-height:240px;min-width:96px;display:block;border:1px solid #ccc;
image-rendering:pixelated}}.noimg{{width:128px;height:96px;display:flex;align-items:center;
justify-content:center;background:#f4f4f4;color:#777;border:1px dashed #bbb}}figcaption{{margin-top:4px}}
.warning{{background:#fff4e0;border-left:4px solid #e69500;padding:6px 10px}}</style>
</head><body>
<h1>Calibration report: {escape(data.bundle_id)}</h1><p>Written {escape(written)}.</p>
{warnings}
<table>{summary}</table>
<h2>Score distribution</h2>{svg}
<h2>Escape rates by defect size</h2>{_detectability_html(data.detectability)}{_auto_html(data.auto)}
<h2>Images nearest the threshold</h2><div class="near">{''.join(cards) or '<p>none</p>'}</div>{_key_html(data.key_picture)}
<h2>Stage times</h2><table>{times or '<tr><td>-</td></tr>'}</table>
</body></html>
"""


def write_calibration_report(out_html: Path, data: CalibrationReportData) -> Path:
    """Write the report atomically (tmp file + rename); returns ``out_html``."""
    return atomic_write_bytes(out_html, render_calibration_report(data).encode("utf-8"))
