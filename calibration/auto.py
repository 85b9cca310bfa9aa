"""`calibrate --auto`: choose the method (and geometry) by how well each candidate separates
held-out golden images from synthetic defects pasted into them — no defect images needed.

Each candidate is calibrated as far as its escape rates (features, fit on the split, thresholds
at the false-reject budget, synthetic defects of calibration.min_defect_px and larger scored
against that threshold; calibration/detectability.py), without a refit or a bundle. The one that
finds the most defects wins (ties: the one that finds more of the smallest size, then the one
first in the list, which is the configured one). Then only the winner is calibrated in full, with
the evidence recorded in its manifest (``auto``) and report. Candidates are tried in order until
the time spent reaches ``calibration.auto_time_factor`` times the first one's, so --auto stays
a bounded multiple of a plain calibration.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from calibration.augment import augment_golden, is_augmented
from calibration.bundle_dir import check_out_dir
from calibration.calibrate import CalibrationResult, calibrate
from calibration.feature_reuse import FeatureReuse
from calibration.geometry import choose_geometry
from calibration.golden import GoldenSet, list_images, read_golden
from inspector.errors import InspectorError
from inspector.methods.registry import FAMILIES, config_for
from inspector.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    name: str  # e.g. "patchcore" or "padim @ 512x256"
    settings: Settings


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    found: float  # share of all synthetic defects found at the candidate's threshold
    found_smallest: float  # the same for the smallest size that fits the images
    n: int  # synthetic defects scored
    real_found: Optional[float]  # share of --defects images found, when given
    seconds: float
    features_keys: tuple = ()  # the golden features it was calibrated on (calibration/feature_reuse.py)
    pose: Optional[bool] = None  # preprocess.align auto: whether pose normalisation was kept (None: not auto)

    def key(self) -> tuple:
        """Sort key, best first: most defects found (real ones first when there are some)."""
        real = self.real_found if self.real_found is not None else 0.0
        return (-real, -self.found, -self.found_smallest)

    def to_json(self) -> dict:
        return {"name": self.candidate.name, "scorer": self.candidate.settings.scorer.model_dump(mode="json"),
                "preprocess_size": _size_json(self.candidate.settings),
                "synthetic_found": round(self.found, 4), "synthetic_found_smallest": round(self.found_smallest, 4),
                "synthetic_n": self.n,
                "real_found": None if self.real_found is None else round(self.real_found, 4),
                "pose_normalised": self.pose, "seconds": round(self.seconds, 2)}


def _size_json(settings: Settings):
    size = settings.preprocess.size
    return size if isinstance(size, str) else list(size)


def _with_method(settings: Settings, method: str) -> Settings:
    return settings.model_copy(update={"scorer": config_for(settings.scorer, method)})


def _one_tile(settings: Settings) -> Settings:
    """The whole ROI in one network input of the tile's size: the most context per feature, the
    least detail (logical anomalies: a missing label, a wrong fill level)."""
    pre = settings.preprocess.model_copy(update={"size": tuple(settings.preprocess.tile), "scale": "auto"})
    return settings.model_copy(update={"preprocess": pre})


def _same_geometry(a: Settings, b: Settings, shapes: list) -> bool:
    """Whether two setups cut the golden frames (``shapes``) into the same network inputs."""
    sa, sb = (choose_geometry(s.preprocess, s.calibration.min_defect_px, shapes).spec for s in (a, b))
    return (sa.width, sa.height, sa.work_size) == (sb.width, sb.height, sb.work_size)


def candidates(settings: Settings, shapes: Optional[list] = None) -> list[Candidate]:
    """The configured setup first, then the other memory-bank methods (PatchCore, PaDiM, global
    context, in the registry's order); with ``preprocess.size: auto`` each also with the whole frame
    in one tile, unless the golden frames (``shapes``, when given) already fit one tile at the auto
    geometry: the same candidates again. Trained heads (Deep SVDD, autoencoder, the discriminator)
    take minutes to fit, so --auto compares them only when they are configured."""
    setups = [settings]
    if settings.preprocess.size == "auto" and settings.preprocess.scale == "auto":
        one = _one_tile(settings)
        if not (shapes and _same_geometry(settings, one, shapes)):
            setups.append(one)
    out = []
    for setup in setups:
        out.append(Candidate(_describe(setup), setup))
        if setup.scorer.type == "memory_bank":
            for name in FAMILIES["memory_bank"]:
                if name != setup.scorer.method:
                    other = _with_method(setup, name)
                    out.append(Candidate(_describe(other), other))
    return out  # the configured setup first


def _describe(settings: Settings) -> str:
    s = settings.scorer
    return f"{s.type}/{s.method} @ {_size_json(settings)}"


def evaluate(candidate: Candidate, golden_dir: Path, golden: GoldenSet, *, defects_dir: Optional[Path],
             progress: bool, reuse: Optional[FeatureReuse] = None) -> Trial:
    t0 = time.perf_counter()
    before = len(reuse.used) if reuse is not None else 0
    result = calibrate(candidate.settings, golden_dir, None, progress=progress, golden=golden,
                       defects_dir=defects_dir, evaluate_only=True, reuse=reuse)
    d = result.detectability
    if d is None or not d.by_size:
        raise InspectorError("calibrate --auto compares candidates by synthetic defects: set "
                             "calibration.synthetic_defects above 0 and a calibration.min_defect_px the images can hold")
    n = sum(r.n for r in d.by_size.values())
    found = sum(r.found for r in d.by_size.values()) / n
    smallest = d.by_size[min(d.by_size)]
    real = d.real.found_share if d.real is not None and d.real.n else None
    return Trial(candidate, found, smallest.found_share, n, real, time.perf_counter() - t0,
                 tuple(dict.fromkeys(reuse.used[before:])) if reuse is not None else (),
                 None if result.align_auto is None else bool(result.align_auto["enabled"]))


def auto_calibrate(settings: Settings, golden_dir: str | Path, out_dir: str | Path, *, progress: bool = True,
                   augment: Optional[int] = None, defects_dir: Optional[str | Path] = None,
                   force: bool = False, candidate_list: Optional[list[Candidate]] = None,
                   say: Callable[[str], None] = log.info) -> tuple[CalibrationResult, list[Trial]]:
    """Try the candidates, calibrate the best into ``out_dir``; returns (its result, every trial)."""
    golden_dir = Path(golden_dir)
    if not golden_dir.is_dir():
        raise InspectorError(f"golden folder {golden_dir}: not found; pass --golden with a folder of good-part images")
    if defects_dir is not None and not Path(defects_dir).is_dir():
        raise InspectorError(f"defects folder {defects_dir}: not found; pass --defects with a folder of "
                             f"known-defect images, or leave it out")
    check_out_dir(out_dir, golden_dir, force=force)  # refused now, not after every candidate
    golden = read_golden(golden_dir, max_pixels=settings.preprocess.max_pixels)
    if not golden.images:
        raise InspectorError(f"golden folder {golden_dir}: no readable image among {len(list_images(golden_dir))} files")
    copies = settings.calibration.augment.copies if augment is None else augment
    if copies and not any(is_augmented(n) for n in golden.names):
        golden = augment_golden(golden, copies, settings.calibration.seed, settings.calibration.augment)
    factor = settings.calibration.auto_time_factor
    trials: list[Trial] = []
    reuse = FeatureReuse()  # candidates at one geometry, and the winner's calibration, share the golden features
    t_start = time.perf_counter()
    for cand in candidate_list or candidates(settings, [im.shape for im in golden.images]):
        spent = time.perf_counter() - t_start
        if trials and spent + trials[-1].seconds > factor * trials[0].seconds:
            say(f"auto: time bound reached ({spent:.0f} s); not trying {cand.name}")
            continue
        try:
            trial = evaluate(cand, golden_dir, golden, defects_dir=Path(defects_dir) if defects_dir else None,
                             progress=progress, reuse=reuse)
        except (InspectorError, ValueError, RuntimeError, MemoryError) as exc:  # one candidate, not the choice
            say(f"auto: {cand.name} could not be calibrated ({exc}); left out")
            continue
        say(f"auto: {cand.name}{' with pose normalisation' if trial.pose else ''}: "
            f"{trial.found * 100:.0f}% of {trial.n} synthetic defects found "
            f"({trial.found_smallest * 100:.0f}% of the smallest)"
            + (f", {trial.real_found * 100:.0f}% of your defect images" if trial.real_found is not None else "")
            + f", {trial.seconds:.1f} s")
        trials.append(trial)
    if not trials:
        raise InspectorError("calibrate --auto: no candidate could be calibrated; see the lines above")
    best = sorted(trials, key=Trial.key)[0]  # stable: among equals, the first tried
    evidence = {"chosen": best.candidate.name, "criterion": "most synthetic defects found at the false-reject "
                "budget threshold (real --defects images first when given), then the most of the smallest size",
                "trials": [t.to_json() for t in trials]}
    reuse.retain(best.features_keys)  # the other geometries' features are not needed again
    result = calibrate(best.candidate.settings, golden_dir, out_dir, progress=progress, golden=golden,
                       defects_dir=defects_dir, force=force, auto_evidence=evidence, reuse=reuse)
    return result, trials
