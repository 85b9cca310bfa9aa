"""Scoring time of a pass against a fail: the daemon makes a frame's pixel map only when it draws
or cuts it (a fail, or every frame with ``output.heatmaps_for_passes``), so what a method leaves
to the map (global context's trimmed references) is not paid on passes. Scores every image in
``--images`` through the pipeline both ways and prints the median scoring ms of each.

    inspector calibrate --golden ../shared/data/mvtec_bottle/train/good --out /tmp/bottle_bundle
    python benchmarks/bench_pass_scoring.py --bundle /tmp/bottle_bundle --images ../shared/data/mvtec_bottle/test/good
"""
from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.golden import list_images  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.decode import read_image_file  # noqa: E402
from inspector.types import Frame  # noqa: E402
from inspector.maththreads import limit_blas_threads  # noqa: E402
from inspector.runtime import build_pipeline  # noqa: E402
from inspector.settings import Settings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--images", required=True, help="a folder of frames (they are scored whatever their verdict)")
    ap.add_argument("--rounds", type=int, default=3, help="passes over the folder, alternating the two ways")
    args = ap.parse_args()
    settings = Settings()
    limit_blas_threads(settings.runtime.blas_threads)  # score as the daemon does
    bundle = load_bundle(args.bundle)
    paths = list_images(Path(args.images))
    images = [read_image_file(str(p), max_pixels=settings.preprocess.max_pixels) for p in paths]
    ways = {"image score only (a pass)": False, "with its pixel map (a fail)": True}
    pipes = {name: build_pipeline(bundle, settings.engine, maps_for_passes=maps) for name, maps in ways.items()}
    for p in pipes.values():
        p.engine.warmup()
    ms: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, pipe in pipes.items():
            for path, img in zip(paths, images):
                frame = Frame(id=path.name, source="bench", captured_at=datetime.now(timezone.utc), image=img,
                              origin_path=str(path))
                v = pipe.inspect([frame])[0]
                ms[name].append(v.timings_ms["scoring"])
    print(f"bundle {args.bundle}: {len(paths)} images x {args.rounds} rounds, scoring ms median (mean)")
    for name, vals in ms.items():
        print(f"  {name:28s} {statistics.median(vals):7.2f} ({statistics.mean(vals):.2f})")


if __name__ == "__main__":
    main()
