"""`inspector calibrate --from-reviews`: learn from what operators reviewed on the console.

Frames reviewed as *false reject* (the newest review of their inspection, made within --since)
join the golden set; frames reviewed as *confirmed defect* or *missed defect* join the defect
examples (--defects). Both sets are assembled as copies in a work folder, so the golden folder
itself is never touched.

Only reviews of frames from the chosen sources count (``calibrate --source NAME``, repeatable;
without it the config's sources when the config feeds this bundle, else every source); which
sources were used, and how many reviews each gave or held back, is printed first and recorded.

Before and after are measured on the same defect examples: "before" evaluates the configured
method on the original golden set (no bundle written), "after" is the real calibration on the
enlarged one. The comparison (threshold, expected false rejects, escapes of the defect examples
and of the synthetic defects) is printed, written to BUNDLE/from_reviews.json and added to
report.html.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from pathlib import Path
from typing import Optional

from calibration.golden import IMAGE_SUFFIXES, list_images
from inspector.errors import InspectorError
from inspector.names import display_text


@dataclass
class Gathered:
    golden: Path
    defects: Optional[Path]
    golden_before: int
    defects_before: int
    false_rejects: list[int] = field(default_factory=list)  # inspection ids added to the golden set
    defect_ids: list[int] = field(default_factory=list)  # added to the defect examples
    missing: list[int] = field(default_factory=list)  # reviewed, but the frame is not on disk
    sources: Optional["Sources"] = None  # which sources' reviews were taken


@dataclass
class Sources:
    """Which sources' reviews calibration takes: ``names`` (None: every source) and why."""

    names: Optional[tuple[str, ...]]
    chosen_by: str  # "--source", "the config's sources", "all sources"
    used: dict[str, int] = field(default_factory=dict)  # source -> reviewed frames taken
    left_out: dict[str, int] = field(default_factory=dict)  # source -> reviewed frames not taken

    def takes(self, source: str) -> bool:
        return self.names is None or source in self.names

    def line(self) -> str:
        """One line, e.g. ``reviews from  cam1: 3, cam2: 0 (--source); left out: cam9: 2 (--source NAME,
        repeatable, picks the sources)``: reviewed frames per source, within --since."""
        def counts(d: dict) -> str:
            return ", ".join(f"{display_text(k)}: {v}" for k, v in sorted(d.items())) or "none"

        out = f"reviews from  {counts(self.used)} ({self.chosen_by})"
        if self.left_out:
            out += f"; left out: {counts(self.left_out)} (--source NAME, repeatable, picks the sources)"
        elif self.names is None:
            out += "; --source NAME (repeatable) takes only some"
        return out

    def to_json(self) -> dict:
        return {"chosen_by": self.chosen_by, "used": self.used, "left_out": self.left_out}


def choose_sources(given: Optional[list[str]], settings, config_given: bool, out_dir: Path) -> Sources:
    """``--source`` names when given; else the config's sources when it has some and its ``bundle``
    is this calibration's --out (or unset): the frames of those sources are judged by the bundle
    being recalibrated; else every source (the golden folder alone does not tell whose it is)."""
    if given:
        return Sources(tuple(dict.fromkeys(given)), "--source")
    bundle = getattr(settings, "bundle", None)
    if config_given and settings.sources and (bundle is None or Path(bundle).resolve() == Path(out_dir).resolve()):
        return Sources(tuple(s.name for s in settings.sources), "the config's sources")
    return Sources(None, "all sources")


def gather(store, *, since: Optional[datetime], golden_dir: Path, defects_dir: Optional[Path], work: Path,
           sources: Optional[Sources] = None) -> Gathered:
    """Copy the golden images plus the reviewed false rejects into ``work/golden``, the defect
    examples plus the reviewed defects into ``work/defects``; only reviews of frames from
    ``sources`` (None: every source), counted per source in ``Gathered.sources``."""
    from inspector.storage.reviews import reviewed_frames

    sources = sources or Sources(None, "all sources")
    golden, defects = work / "golden", work / "defects"
    golden.mkdir(parents=True)
    defects.mkdir()
    originals = list_images(Path(golden_dir))
    for p in originals:
        shutil.copy2(p, golden / p.name)
    examples = list_images(Path(defects_dir)) if defects_dir is not None else []
    for p in examples:
        shutil.copy2(p, defects / p.name)
    g = Gathered(golden=golden, defects=defects, golden_before=len(originals), defects_before=len(examples),
                 sources=sources)
    sources.used = {name: 0 for name in sources.names or ()}
    for r in reviewed_frames(store, since=since):
        if not sources.takes(r["source"]):
            sources.left_out[r["source"]] = sources.left_out.get(r["source"], 0) + 1
            continue
        sources.used[r["source"]] = sources.used.get(r["source"], 0) + 1
        src = Path(r["stored_path"]) if r["stored_path"] else None
        if src is None or not src.is_file() or src.suffix.lower() not in IMAGE_SUFFIXES:
            g.missing.append(r["inspection_id"])
            continue
        name = f"review-{r['inspection_id']}{src.suffix.lower()}"
        if r["kind"] == "false_reject":
            shutil.copy2(src, golden / name)
            g.false_rejects.append(r["inspection_id"])
        else:
            shutil.copy2(src, defects / name)
            g.defect_ids.append(r["inspection_id"])
    if not g.false_rejects and not g.defect_ids:
        raise InspectorError("no reviewed frames to learn from" + (f" since {since:%Y-%m-%d %H:%M} UTC" if since else "")
                             + (f" ({len(g.missing)} reviewed frames are no longer on disk)" if g.missing else "")
                             + (f"; {sources.line()}" if sources.names is not None else "")
                             + "; review fails and passes on the console first (inspector serve)")
    if not examples and not g.defect_ids:
        g.defects = None
    return g


def _side(r) -> dict:
    t = r.image_threshold
    d = r.detectability
    real = d.real if d is not None else None
    return {"threshold": t.value, "expected_false_reject_pct": None if t.expected_frr is None else 100 * t.expected_frr,
            "heldout_false_reject_pct": 100 * t.empirical_frr, "heldout_n": t.n,
            "defect_examples": None if real is None else real.n,
            "defect_escapes": None if real is None else real.n - real.found,
            "synthetic": None if d is None else d.statement()}


def comparison(before, after, g: Gathered) -> dict:
    return {"false_rejects_added": g.false_rejects, "defects_added": g.defect_ids, "missing_frames": g.missing,
            "sources": g.sources.to_json() if g.sources is not None else None,
            "golden_images": [g.golden_before, g.golden_before + len(g.false_rejects)],
            "before": _side(before), "after": _side(after)}


def _fmt(v, unit="") -> str:
    if v is None:
        return "-"
    return f"{v:.4g}{unit}" if isinstance(v, float) else f"{v}{unit}"


def lines(cmp: dict) -> list[str]:
    b, a = cmp["before"], cmp["after"]
    out = [f"from reviews  {len(cmp['false_rejects_added'])} false rejects joined the golden set "
           f"({cmp['golden_images'][0]} -> {cmp['golden_images'][1]} images), {len(cmp['defects_added'])} reviewed "
           f"defects joined the defect examples"
           + (f"; {len(cmp['missing_frames'])} reviewed frames are no longer on disk" if cmp["missing_frames"] else ""),
           f"              {'before':>14} {'after':>14}",
           f"threshold     {_fmt(b['threshold']):>14} {_fmt(a['threshold']):>14}",
           f"false rejects {_fmt(b['expected_false_reject_pct'], '%'):>14} {_fmt(a['expected_false_reject_pct'], '%'):>14}"
           "  expected share of good parts"]
    if a["defect_examples"]:
        out.append(f"escapes       {_fmt(b['defect_escapes']) + ' of ' + _fmt(b['defect_examples']):>14} "
                   f"{_fmt(a['defect_escapes']) + ' of ' + _fmt(a['defect_examples']):>14}  defect examples below the threshold")
    if b["synthetic"] or a["synthetic"]:
        out.append(f"synthetic     before: {b['synthetic'] or '-'}")
        out.append(f"              after:  {a['synthetic'] or '-'}")
    return out


def record(cmp: dict, bundle_dir: Path, report: Optional[Path]) -> None:
    """BUNDLE/from_reviews.json, and the comparison as a section of report.html."""
    (bundle_dir / "from_reviews.json").write_text(json.dumps(cmp, indent=2))
    if report is None or not report.is_file():
        return
    html = report.read_text(encoding="utf-8")
    section = ("<h2>What the reviews changed</h2><pre id=\"from-reviews\">" + escape("\n".join(lines(cmp)))
               + "</pre>")
    html = html.replace("</body>", section + "</body>", 1) if "</body>" in html else html + section
    report.write_text(html, encoding="utf-8")
