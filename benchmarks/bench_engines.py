"""Engine parity and speed on a shared dataset (issue 3).

1. calibrates once on <dataset>/train/good with onnxruntime (the fp32 reference);
2. for each engine (torch, onnxruntime, OpenVINO f32 on that same bundle; OpenVINO bf16 on a
   bundle of its own, since thresholds belong to the (bundle, precision) pair and the daemon
   refuses the fp32 one) scores every test image one at a time through the daemon's own
   pipeline (runtime.build_pipeline → InspectionPipeline.inspect, as `inspector bench` does),
   after warm-up, and reports feature extraction ms/image and scoring ms/image (median, p95),
   image AUROC, max |score - onnxruntime score| and the number of verdicts that agree;
3. splits scoring into the memory-bank search (fp32 exact, and the bf16 search that bf16 engines
   use) and the map upsampling + blur,
   on the real bank and on a bank at the coreset cap (scorer.coreset.max_size, 4000 by default);
4. single-thread process CPU time per frame of each engine's feature extraction and of the search
   at the cap (robust on a busy machine); with --sweep, onnxruntime session options and OpenVINO
   hints at batch 1, round-robin.

    python benchmarks/bench_engines.py [--dataset ../shared/data/mvtec_bottle] [--train-limit N]
        [--engines torch,onnxruntime,openvino-fp32,openvino-bf16] [--config YAML] [--sweep] [--out FILE.json]

Timings are wall-clock on a machine that may be shared: the 1/5/15-minute load averages at the
start and end of each engine's run are in the JSON; compare engines only at a low load.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibration.benchmark import write_json_result  # noqa: E402
from calibration.calibrate import calibrate  # noqa: E402
from calibration.evaluation import auroc, mvtec_test_set, percentiles  # noqa: E402
from calibration.golden import read_golden  # noqa: E402
from inspector.bundle import load_bundle  # noqa: E402
from inspector.errors import InspectorError  # noqa: E402
from inspector.runtime import build_pipeline  # noqa: E402
from inspector.maththreads import limit_blas_threads  # noqa: E402
from inspector.settings import RuntimeConfig, Settings, engine_config, load_settings  # noqa: E402
from inspector.types import Frame  # noqa: E402

ENGINES = ("torch", "onnxruntime", "openvino-fp32", "openvino-bf16")
REFERENCE = "onnxruntime"
WARMUP_IMAGES = 5


def bench_engine_config(name: str, max_batch: int):
    """Engine config for a bench name: "openvino-bf16" → openvino with precision bf16."""
    kind, _, precision = name.partition("-")
    fields = {"type": kind, "max_batch": max_batch}
    if precision:
        fields["precision"] = precision
    return engine_config(**fields)


def _load(dataset: Path, settings: Settings, train_limit: Optional[int]):
    train = dataset / "train" / "good"
    golden = read_golden(train, max_pixels=settings.preprocess.max_pixels)
    if train_limit:
        golden = golden.first(train_limit)
    from inspector.decode import read_image_file

    items = mvtec_test_set(dataset)
    images = [read_image_file(str(it.path), max_pixels=settings.preprocess.max_pixels) for it in items]
    return train, golden, items, images


def _frame(name: str, image: np.ndarray) -> Frame:
    return Frame(id=name, source="bench", captured_at=datetime.now(timezone.utc), image=image)


def score_with(bundle, config, items, images) -> dict:
    """Every test image through build_pipeline(bundle, config) at batch 1, after warm-up."""
    load_before = os.getloadavg()
    pipeline = build_pipeline(bundle, config)
    try:
        pipeline.engine.warmup()
        for k in range(min(WARMUP_IMAGES, len(images))):
            pipeline.inspect([_frame("warmup", images[k])])
        scores, kinds, feat_ms, score_ms = [], [], [], []
        for it, img in zip(items, images):
            v = pipeline.inspect([_frame(it.path.name, img)])[0]
            if v.score is None:
                raise InspectorError(f"{it.path}: {v.error}")
            scores.append(v.score)
            kinds.append(v.kind.value)
            feat_ms.append(v.timings_ms["inference"])
            score_ms.append(v.timings_ms["scoring"])
        precision = pipeline.engine.precision
    finally:
        pipeline.engine.close()
    labels = np.array([it.label for it in items])
    return {"engine": f"{config.type} {precision}", "bundle": str(bundle.path), "threshold": bundle.image_threshold,
            "feature_ms": percentiles(feat_ms), "scoring_ms": percentiles(score_ms),
            "image_auroc": round(auroc(labels, np.array(scores)), 4),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
            "_scores": scores, "_kinds": kinds}


def _time_calls(fn, warm_up_arg, args, clock) -> dict:
    """``fn(warm_up_arg)`` once, then ``fn(a)`` for each of ``args`` timed with ``clock``
    (time.perf_counter: wall-clock; time.process_time: process CPU); ms per call."""
    fn(warm_up_arg)
    ts = []
    for a in args:
        t = clock()
        fn(a)
        ts.append((clock() - t) * 1e3)
    return percentiles(ts)


def _capped_bank(bank: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    """``cap`` rows drawn from the golden patch distribution: bank rows resampled with small noise
    (the search cost depends only on the sizes, the noise keeps argmin from being trivial)."""
    return bank[rng.integers(0, len(bank), cap)] + rng.normal(0, 0.05, (cap, bank.shape[1])).astype(np.float32)


def time_search(queries: np.ndarray, bank: np.ndarray, repeats: int, precision: str = "fp32") -> dict:
    """The scorer's nearest-row search for one frame's patches against ``bank``, at the given
    search precision (fp32: exact GEMM; bf16: bf16 GEMM + exact refine); ms per call."""
    from inspector.methods.knn import build_searcher

    searcher = build_searcher(precision, bank)  # precomputes what the daemon's searcher precomputes
    return _time_calls(searcher.search, queries, [queries] * repeats, time.perf_counter)


def scoring_breakdown(bundle, images, cap: int, repeats: int) -> dict:
    """Memory-bank search vs upsample + blur, per frame (batch 1), with onnxruntime features;
    on the bundle's bank and on a bank of ``cap`` rows (the coreset cap) drawn from the golden
    patch distribution (_capped_bank)."""
    from inspector.methods import patchcore
    from inspector.methods.base import upsample_and_smooth

    pipeline = build_pipeline(bundle, engine_config(type="onnxruntime", max_batch=1))
    try:
        x, _ = pipeline.preprocessor.prepare(images[0])
        outputs = pipeline.engine.run(pipeline.preprocessor.tiles([x]))
        state = pipeline.scorer.state
        feats = pipeline.grid.stitch(outputs, 1)[state.params.feature_name]
    finally:
        pipeline.engine.close()
    n, d, h, w = feats.shape
    q = np.ascontiguousarray(feats.transpose(0, 2, 3, 1).reshape(-1, d), np.float32)
    bank = state.memory_bank
    capped = _capped_bank(bank, cap, np.random.default_rng(0))
    maps = patchcore.patch_scores(state, feats)[0]
    up = []
    for _ in range(repeats):
        t = time.perf_counter()
        upsample_and_smooth(maps, pipeline.input_hw, state.params.smoothing_sigma)
        up.append((time.perf_counter() - t) * 1e3)
    return {"queries_per_frame": int(q.shape[0]), "feature_dim": int(d),
            "bundle_bank": {"rows": int(len(bank)), "search_ms": time_search(q, bank, repeats),
                            "search_ms_bf16": time_search(q, bank, repeats, "bf16")},
            "capped_bank": {"rows": int(cap), "search_ms": time_search(q, capped, repeats),
                            "search_ms_bf16": time_search(q, capped, repeats, "bf16")},
            "upsample_blur_ms": percentiles(up)}


def single_thread_cpu_ms(bundle, images, engines: list[str], cap: int, count: int = 20) -> dict:
    """Process CPU time (time.process_time) per frame with every library held to one thread:
    feature extraction per engine and the bank search at the coreset cap. Other users' jobs
    cannot inflate CPU time the way they inflate wall-clock time, so this compares the work
    each option does even on a busy shared machine (wall-clock on 2 threads is in 'engines')."""
    import cv2

    from engines.registry import build_engine
    from inspector.methods.base import upsample_and_smooth
    from inspector.methods.knn import build_searcher

    from threadpoolctl import threadpool_limits
    pre = bundle.preprocessor()
    state = bundle.state  # a PatchCore bundle's
    input_hw = pre.grid.work_hw
    tensors = [pre.tiles([pre.prepare(im)[0]]) for im in images[:count]]  # one frame's network inputs

    def cpu_ms(fn, args) -> dict:
        return _time_calls(fn, args[0], args, time.process_time)

    out: dict[str, dict] = {"features_ms": {}}
    spec = bundle.engine_spec(max_batch=4)
    for name in engines:
        config = bench_engine_config(name, 4)
        config = config.model_copy(update={"threads": 1, **({"device": "cpu"} if config.type == "torch" else {})})
        try:
            engine = build_engine(config, spec)
        except Exception as exc:  # EngineUnavailable, EngineError: report and go on
            out["features_ms"][name] = {"unavailable": str(exc)}
            continue
        try:
            engine.warmup()
            out["features_ms"][name] = cpu_ms(engine.run, tensors)
        finally:
            engine.close()
    bank = state.memory_bank
    d = int(bank.shape[1])
    rng = np.random.default_rng(0)
    capped_bank = _capped_bank(bank, cap, rng)
    capped = build_searcher("fp32", capped_bank)
    h, w = input_hw[0] // 8, input_hw[1] // 8
    queries = [rng.normal(0, 1, (h * w, d)).astype(np.float32) + bank[rng.integers(0, len(bank), h * w)]
               for _ in range(count)]
    limit = threadpool_limits(1)
    threads_cv = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        out["search_ms_at_cap"] = cpu_ms(capped.search, queries)
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            capped_bf16 = build_searcher("bf16", capped_bank)
            out["search_ms_at_cap_bf16"] = cpu_ms(capped_bf16.search, queries)
        finally:
            torch.set_num_threads(torch_threads)
        maps = rng.random((1, h, w), dtype=np.float32)
        out["upsample_blur_ms"] = cpu_ms(lambda _: upsample_and_smooth(maps, input_hw, state.params.smoothing_sigma),
                                         list(range(count)))
    finally:
        cv2.setNumThreads(threads_cv)
        limit.unregister()
    out["cap_rows"], out["queries_per_frame"], out["feature_dim"] = cap, h * w, d
    out["blas_single_thread"] = True
    return out


def option_sweep(bundle, images, rounds: int = 30) -> dict:
    """Batch-1 feature extraction under each onnxruntime session option and OpenVINO hint worth
    trying, timed round-robin (one run of every variant per round, so other users' load falls on
    all of them alike): wall-clock ms and process CPU ms (median, p95)."""
    import onnxruntime as ort

    spec = bundle.engine_spec(max_batch=4)
    pre = bundle.preprocessor()
    x = pre.tiles([pre.prepare(images[0])[0]])
    feeds = {spec.input_name: x}
    variants = {}
    levels = {"ALL": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "EXTENDED": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}
    for threads, spin, level in ((0, "1", "ALL"), (2, "1", "ALL"), (2, "0", "ALL"), (1, "0", "ALL"), (2, "1", "EXTENDED")):
        o = ort.SessionOptions()
        o.graph_optimization_level = levels[level]
        o.inter_op_num_threads = 1
        if threads:
            o.intra_op_num_threads = threads
        o.add_session_config_entry("session.intra_op.allow_spinning", spin)
        sess = ort.InferenceSession(spec.onnx_path, o, providers=["CPUExecutionProvider"])
        variants[f"onnxruntime threads {threads or 'auto'} spin {spin} {level}"] = \
            (lambda sess: lambda: sess.run(list(spec.output_names), feeds))(sess)
    try:
        from engines.openvino_engine import import_openvino

        ov = import_openvino()  # (telemetry off)
        core = ov.Core()
        c, h, w = spec.input_shape
        for prec in ("f32", "bf16"):
            for shape, hint, threads in (("1..4", "LATENCY", 0), ("1", "LATENCY", 0), ("1", "LATENCY", 1),
                                         ("1", "THROUGHPUT", 0)):
                model = core.read_model(spec.onnx_path)
                model.reshape({spec.input_name: ov.PartialShape(
                    [ov.Dimension(1, 4) if shape == "1..4" else 1, c, h, w])})
                props = {"INFERENCE_PRECISION_HINT": prec, "PERFORMANCE_HINT": hint}
                if threads:
                    props["INFERENCE_NUM_THREADS"] = threads
                req = core.compile_model(model, "CPU", props).create_infer_request()
                variants[f"openvino {prec} batch {shape} {hint} threads {threads or 'auto'}"] = \
                    (lambda req: lambda: req.infer(feeds))(req)
    except ImportError:
        pass
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        for _ in range(3):
            fn()
    load = os.getloadavg()
    for _ in range(rounds):
        for k, fn in variants.items():
            t, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[k].append((time.perf_counter() - t) * 1e3)
            cpu[k].append((time.process_time() - c0) * 1e3)
    return {"load_avg_before": [round(v, 2) for v in load], "load_avg_after": [round(v, 2) for v in os.getloadavg()],
            "rounds": rounds, "wall_ms": {k: percentiles(v) for k, v in wall.items()},
            "process_cpu_ms": {k: percentiles(v) for k, v in cpu.items()}}


def run(dataset: Path, *, config: Optional[Path], engines: list[str], train_limit: Optional[int],
        repeats: int, keep: Optional[Path], sweep: bool = False) -> dict:
    settings = load_settings(config) if config else Settings()
    limit_blas_threads(RuntimeConfig().blas_threads)  # score as the daemon does (and calibrate alike)
    train, golden, items, images = _load(dataset, settings, train_limit)
    work = keep or Path(tempfile.mkdtemp(prefix="inspector-bench-engines-"))
    bundles: dict[str, object] = {}
    cal_seconds: dict[str, float] = {}

    def bundle_for(precision: str, name: str):
        if precision not in bundles:
            # fp32: one bundle for every fp32 engine, calibrated with the reference engine
            s = settings.model_copy(update={"engine": bench_engine_config(
                REFERENCE if precision == "fp32" else name, settings.engine.max_batch)})
            t0 = time.perf_counter()
            calibrate(s, train, work / f"bundle-{precision}", progress=False, golden=golden)
            cal_seconds[precision] = round(time.perf_counter() - t0, 1)
            bundles[precision] = load_bundle(work / f"bundle-{precision}")
        return bundles[precision]

    results: dict[str, dict] = {}
    try:
        for name in engines:
            precision = "bf16" if name.endswith("bf16") else "fp32"
            cfg = bench_engine_config(name, settings.engine.max_batch)
            try:
                results[name] = score_with(bundle_for(precision, name), cfg, items, images)
            except InspectorError as exc:  # engine not installed / no such hardware
                results[name] = {"unavailable": str(exc)}
            print(f"{name}: {_line(results[name])}", file=sys.stderr)
        ref = results.get(REFERENCE, {})
        for name, r in results.items():
            if "_scores" in r and "_scores" in ref:
                a, b = np.array(r["_scores"]), np.array(ref["_scores"])
                r["max_abs_score_diff_vs_onnxruntime"] = float(np.abs(a - b).max())
                r["max_rel_score_diff_vs_onnxruntime"] = float((np.abs(a - b) / np.abs(b)).max())
                r["verdicts_agreeing_with_onnxruntime"] = int(sum(x == y for x, y in zip(r["_kinds"], ref["_kinds"])))
        cap = settings.scorer.coreset.max_size or 4000
        breakdown = scoring_breakdown(bundle_for("fp32", REFERENCE), images, cap, repeats)
        cpu = single_thread_cpu_ms(bundle_for("fp32", REFERENCE), images, engines, cap)
        swept = option_sweep(bundle_for("fp32", REFERENCE), images) if sweep else None
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    for r in results.values():
        r.pop("_kinds", None)
        if "_scores" in r:
            r["scores"] = [round(float(s), 5) for s in r.pop("_scores")]
    return {
        "dataset": str(dataset), "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={os.cpu_count()}".strip(),
        "backbone": settings.backbone.name,
        "input": bundle_for("fp32", REFERENCE).preprocess.describe() if bundles else str(settings.preprocess.size),
        "train_images": len(golden.images), "test_images": len(items),
        "calibration_seconds": cal_seconds, "bank_rows": {p: int(len(b.arrays["memory_bank"])) for p, b in bundles.items()},
        "test_names": [f"{it.defect}/{it.path.name}" for it in items],
        "engines": results, "scoring_breakdown": breakdown, "single_thread_cpu": cpu,
        **({"option_sweep": swept} if swept else {}),
    }


def _line(r: dict) -> str:
    if "unavailable" in r:
        return "unavailable: " + r["unavailable"]
    f, s = r["feature_ms"], r["scoring_ms"]
    return (f"{r['engine']}: features {f['median']:.1f}/{f['p95']:.1f} ms, scoring {s['median']:.1f}/{s['p95']:.1f} ms "
            f"(median/p95), AUROC {r['image_auroc']:.4f}, load {r['load_avg_before'][0]}")


def format_result(res: dict) -> str:
    lines = [f"dataset {res['dataset']} ({res['train_images']} train, {res['test_images']} test), "
             f"{res['backbone']} {res['input']}, bank rows {res['bank_rows']}",
             f"{'engine':16s} {'features ms':>14s} {'scoring ms':>13s} {'AUROC':>7s} {'max|dscore|':>12s} "
             f"{'rel':>9s} {'verdicts=':>9s} {'load':>5s}"]
    for name, r in res["engines"].items():
        if "unavailable" in r:
            lines.append(f"{name:16s} unavailable: {r['unavailable']}")
            continue
        f, s = r["feature_ms"], r["scoring_ms"]
        lines.append(f"{name:16s} {f['median']:6.1f}/{f['p95']:6.1f} {s['median']:6.1f}/{s['p95']:5.1f} "
                     f"{r['image_auroc']:7.4f} {r.get('max_abs_score_diff_vs_onnxruntime', float('nan')):12.3g} "
                     f"{r.get('max_rel_score_diff_vs_onnxruntime', float('nan')):9.2g} "
                     f"{r.get('verdicts_agreeing_with_onnxruntime', '-'):>5}/{res['test_images']:<3} "
                     f"{r['load_avg_before'][0]:5.2f}")
    b = res["scoring_breakdown"]
    lines.append(f"scoring per frame ({b['queries_per_frame']} queries x {b['feature_dim']} dims): search fp32 / bf16 "
                 f"{b['bundle_bank']['search_ms']['median']:.2f} / {b['bundle_bank']['search_ms_bf16']['median']:.2f} ms "
                 f"on the bundle's {b['bundle_bank']['rows']} rows, {b['capped_bank']['search_ms']['median']:.2f} / "
                 f"{b['capped_bank']['search_ms_bf16']['median']:.2f} ms on {b['capped_bank']['rows']} rows; "
                 f"upsample+blur {b['upsample_blur_ms']['median']:.2f} ms (medians)")
    c = res["single_thread_cpu"]
    lines.append("single-thread CPU ms/frame (median): features " + ", ".join(
        f"{k} {v['median']:.2f}" if "median" in v else f"{k} unavailable" for k, v in c["features_ms"].items())
        + f"; search at {c['cap_rows']} rows fp32 {c['search_ms_at_cap']['median']:.2f}, "
        f"bf16 {c['search_ms_at_cap_bf16']['median']:.2f}; upsample+blur "
        f"{c['upsample_blur_ms']['median']:.2f}")
    if "option_sweep" in res:
        sw = res["option_sweep"]
        lines.append(f"option sweep, batch 1, {sw['rounds']} rounds round-robin, load {sw['load_avg_before'][0]}: "
                     "wall median/p95, process CPU median (ms)")
        for k, v in sw["wall_ms"].items():
            lines.append(f"  {k:48s} {v['median']:7.2f}/{v['p95']:7.2f}  cpu {sw['process_cpu_ms'][k]['median']:7.2f}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", type=Path, default=ROOT.parent / "shared" / "data" / "mvtec_bottle",
                   help="MVTec-layout folder (default: ../shared/data/mvtec_bottle)")
    p.add_argument("--config", type=Path, help="YAML config (preprocess/backbone/scorer/calibration/engine)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, from {', '.join(ENGINES)}")
    p.add_argument("--train-limit", type=int, help="use only the first N train/good images")
    p.add_argument("--repeats", type=int, default=50, help="repeats of the scoring breakdown timings")
    p.add_argument("--sweep", action="store_true",
                   help="also time onnxruntime session options and OpenVINO hints at batch 1")
    p.add_argument("--keep", type=Path, help="keep the calibrated bundles in this folder")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        p.error(f"unknown engine(s) {unknown}; choose from {', '.join(ENGINES)}")
    if not (args.dataset / "train" / "good").is_dir():
        p.error(f"{args.dataset}: no train/good folder; expected the MVTec AD layout")
    res = run(args.dataset, config=args.config, engines=engines, train_limit=args.train_limit,
              repeats=args.repeats, keep=args.keep, sweep=args.sweep)
    print(format_result(res))
    if args.out:
        write_json_result(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
