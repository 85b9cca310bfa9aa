"""Does `calibrate --auto`'s criterion (synthetic defects found at the budget threshold) rank the
default against config/scorers/global_context_texture_bands.yaml (the aligned map on 8 principal
directions) as the real test sets do? docs/BENCHMARKS.md, "trim 8 the default".

    python benchmarks/probe_auto_dims.py magnetic_tile loco_juice_bottle mvtec_bottle [--data ../shared/data]
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.auto import Candidate, evaluate  # noqa: E402
from calibration.feature_reuse import FeatureReuse  # noqa: E402
from calibration.golden import read_golden  # noqa: E402
from inspector.settings import Settings, load_settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="dataset folder names under --data (MVTec layout)")
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = ap.parse_args()
    setups = (("default", Settings()),
              ("texture_bands", load_settings(ROOT / "config" / "scorers" / "global_context_texture_bands.yaml")))
    for name in args.sets:
        golden_dir = Path(args.data) / name / "train" / "good"
        golden = read_golden(golden_dir, max_pixels=Settings().preprocess.max_pixels)
        reuse = FeatureReuse()  # both setups cut the frames alike: one extraction
        for label, settings in setups:
            t = evaluate(Candidate(label, settings), golden_dir, golden, defects_dir=None, progress=False, reuse=reuse)
            print(f"{name} {label} found {t.found:.4f} smallest {t.found_smallest:.4f} n {t.n} {t.seconds:.1f}s",
                  flush=True)


if __name__ == "__main__":
    main()
