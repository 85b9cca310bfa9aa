"""Fit a model bundle from golden (defect-free) images.

Reads every image in --golden (png, jpg, bmp, tif; grey or colour; any size), holds a share out,
fits the scorer on the rest, sets the image and pixel thresholds from the held-out scores (by
default so that calibration.false_reject_budget of good parts fail), measures the escape rate of
synthetic defects of calibration.min_defect_px and larger pasted into the held-out images, refits
on all (calibration.refit_on_all), and writes BUNDLE/manifest.json, arrays.npz, backbone.onnx and
report.html. Settings come from --config (sections preprocess, backbone, scorer, calibration,
engine); without one, the defaults.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from inspector.errors import InspectorError

log = logging.getLogger("inspector.calibrate")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--golden", required=True, type=Path, help="folder of defect-free images")
    p.add_argument("--out", required=True, type=Path,
                   help="bundle folder to write; an existing bundle there is kept as OUT.previous. A non-empty "
                        "folder that is not a bundle is refused (see --force); the golden folder always is")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out that is not a bundle (its files are kept in OUT.previous "
                        "until the next calibration)")
    p.add_argument("--config", type=Path, help="YAML config (preprocess/backbone/scorer/calibration/engine sections)")
    p.add_argument("--defects", type=Path, help="optional folder of known-defect images: their escape rate at the "
                                                "threshold goes into the bundle and the summary, their scores in the report; "
                                                "scorer supervised trains on them (and requires them)")
    p.add_argument("--augment", type=int, metavar="N",
                   help="N jittered copies per golden image, for few golden samples (default: calibration.augment.copies); "
                        "thresholds are still set on original images only")
    p.add_argument("--auto", action="store_true",
                   help="choose the method by how well each candidate finds synthetic defects pasted into held-out "
                        "golden images (and your --defects), then calibrate the best; the comparison goes into the "
                        "bundle and report.html")
    p.add_argument("--from-reviews", action="store_true",
                   help="also learn from the console's reviews: frames reviewed as false rejects join the golden set, "
                        "confirmed and missed defects the defect examples; prints what changed (threshold, expected "
                        "false rejects, escapes before/after)")
    p.add_argument("--since", default="7d", metavar="AGE",
                   help="with --from-reviews: reviews made within this age or since this ISO time (default 7d)")
    p.add_argument("--source", action="append", metavar="NAME",
                   help="with --from-reviews: only reviews of frames from this source (repeatable; default: the "
                        "config's sources when its bundle is --out, else every source; the sources used and "
                        "their review counts are printed)")
    p.add_argument("--db", metavar="URL_OR_PATH",
                   help="with --from-reviews: the results database (default: the config's database.url)")
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from calibration.summary import print_summary, write_report
    from inspector.settings import Settings, load_settings

    settings = load_settings(args.config) if args.config else Settings()
    if args.from_reviews:
        return _from_reviews(args, settings)
    if args.source:
        raise InspectorError("--source picks the reviews of --from-reviews; add --from-reviews or leave it out")
    try:
        result = _calibrate_into(args, settings, args.golden, args.defects)
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, InspectorError):
            raise
        raise InspectorError(f"calibration failed: {exc}") from exc
    report = None
    if not args.no_report:
        report = write_report(result, settings, args.defects)
    print_summary(result, report)
    return 0


def _calibrate_into(args: argparse.Namespace, settings, golden, defects):
    """Calibrate (or with --auto, choose and calibrate) ``golden`` into ``args.out``."""
    from calibration.calibrate import calibrate

    if args.auto:
        from calibration.auto import auto_calibrate

        result, _ = auto_calibrate(settings, golden, args.out, progress=not args.quiet, augment=args.augment,
                                   defects_dir=defects, force=args.force, say=print)
        return result
    return calibrate(settings, golden, args.out, progress=not args.quiet, augment=args.augment,
                     defects_dir=defects, force=args.force)


def _from_reviews(args: argparse.Namespace, settings) -> int:
    """Calibrate on the golden set and defect examples enlarged by the reviews (calibration/from_reviews.py)."""
    import tempfile

    from calibration import from_reviews
    from calibration.bundle_dir import check_out_dir
    from calibration.calibrate import calibrate
    from calibration.summary import print_summary, write_report
    from inspector.storage.database import ResultStore, normalise_url
    from inspector.storage.queries import parse_when

    if not args.db and not args.config:
        raise InspectorError("--from-reviews needs the results database: --db PATH_OR_URL or --config (database.url)")
    # calibration below sees a temporary copy of the golden set, so --out is checked against the real one here
    check_out_dir(args.out, args.golden, force=args.force)
    store = ResultStore(normalise_url(args.db or settings.database.url), read_only=True)
    try:
        store.ensure_schema()
        with tempfile.TemporaryDirectory(prefix="inspector-reviews-") as work:
            sources = from_reviews.choose_sources(args.source, settings, args.config is not None, args.out)
            g = from_reviews.gather(store, since=parse_when(args.since), golden_dir=args.golden,
                                    defects_dir=args.defects, work=Path(work), sources=sources)
            print(g.sources.line(), flush=True)  # before the calibrations' minutes
            try:
                before = calibrate(settings, args.golden, None, progress=not args.quiet, augment=args.augment,
                                   defects_dir=g.defects, evaluate_only=True)
                after = _calibrate_into(args, settings, g.golden, g.defects)
                report = None if args.no_report else write_report(after, settings, g.defects)
            except (OSError, ValueError, RuntimeError) as exc:
                if isinstance(exc, InspectorError):
                    raise
                raise InspectorError(f"calibration failed: {exc}") from exc
    finally:
        store.close()
    cmp = from_reviews.comparison(before, after, g)
    from_reviews.record(cmp, after.bundle_dir, report)
    print_summary(after, report)
    print("\n".join(from_reviews.lines(cmp)))
    return 0
