"""The feature flow (issue 13 item 2) against PatchCore on cached patch features.

Reads a feature cache (benchmarks/feature_cache.py: the features exactly as calibration sees
them), fits PatchCore and flow variants on ``train``, scores ``test`` and prints image AUROC,
pixel AUROC (maps at the work image, content only, every 2nd pixel) and the escape rate at 1%
false rejects on the test good images, with the fit time and the head's torch CPU time per
frame (the head alone exported to ONNX, one thread, fp32, on OpenVINO, onnxruntime and torch: the
flow runs inside the engine graph, so this is its cost beyond the backbone). Per-frame costs are
process CPU time (a frame's cost on an idle core; wall time on a shared 2-core box mostly measures
the other processes), wall time beside it. Run:

    python benchmarks/bench_flow.py --cache /work/featcache/bottle_256.npz
    python benchmarks/bench_flow.py --cache /work/featcache/bottle_256.npz --variants c64_k8 c32_k8 --epochs 20
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from calibration.evaluation import auroc, operating_point, threshold_at_frr  # noqa: E402
from calibration.methods import NoProgress, fitter  # noqa: E402
from engines.backbones.heads import load_head  # noqa: E402
from inspector.methods.base import score_head_output  # noqa: E402
from inspector.methods.registry import Scorer, method_of  # noqa: E402
from inspector.settings import Settings  # noqa: E402

# name -> flow section (channels, blocks, hidden); training from --epochs / defaults
VARIANTS = {
    "c64_k8": {"channels": 64, "blocks": 8, "hidden": 64},
    "c32_k8": {"channels": 32, "blocks": 8, "hidden": 32},
    "c32_k8_untrained": {"channels": 32, "blocks": 8, "hidden": 32, "untrained": True},
    "c48_k6": {"channels": 48, "blocks": 6, "hidden": 48},
    "c96_k4": {"channels": 96, "blocks": 4, "hidden": 96},
    "c64_k4": {"channels": 64, "blocks": 4, "hidden": 64},
    "c128_k4": {"channels": 128, "blocks": 4, "hidden": 64},
    "c64_k4_untrained": {"channels": 64, "blocks": 4, "hidden": 64, "untrained": True},
}


def metrics(scores: np.ndarray, maps: np.ndarray, cache) -> dict:
    labels = cache["labels"].astype(int)
    ch, cw = (int(v) for v in cache["content_hw"])
    good, bad = scores[labels == 0], scores[labels == 1]
    op = operating_point(good, bad, threshold_at_frr(good, 0.01))
    use = (labels == 0) | cache["has_mask"]
    m = maps[use][:, :ch:2, :cw:2]
    gt = cache["masks"][use][:, :ch:2, :cw:2] > 0
    return {"image_auroc": auroc(labels, scores), "pixel_auroc": auroc(gt.ravel(), m.ravel()),
            "escape_1pct": op["escape_rate"], "frr": op["false_reject_rate"]}


def run_patchcore(train: np.ndarray, test: np.ndarray, work_hw) -> tuple[np.ndarray, np.ndarray, float, float]:
    config = Settings().scorer
    t0 = time.perf_counter()
    state = fitter("patchcore")(train, config, 0, NoProgress())
    fit_s = time.perf_counter() - t0
    scorer = Scorer(method_of("patchcore"), state)
    c0 = time.process_time()
    sm = [scorer.score({"features": test[i:i + 1]}, work_hw) for i in range(len(test))]
    ms = (time.process_time() - c0) / len(test) * 1000
    return (np.concatenate([s.image_scores for s in sm]), np.concatenate([s.pixel_maps for s in sm]), fit_s, ms)


class _EpochClock(NoProgress):
    def __init__(self):
        self.t0 = time.perf_counter()

    def update(self, n: int = 1) -> None:
        print(f"  epoch done at {time.perf_counter() - self.t0:.0f} s", file=sys.stderr, flush=True)


def run_flow(train: np.ndarray, test: np.ndarray, work_hw, variant: dict, epochs: int):
    section = {k: v for k, v in variant.items() if k != "untrained"}
    section["training"] = {"epochs": 1 if variant.get("untrained") else epochs, "batch_size": 8, "lr": 1e-3,
                           "patience": 6, "weight_decay": 1e-5}
    config = method_of("flow").Config.model_validate({"type": "flow", "flow": section})
    t0, c0 = time.perf_counter(), time.process_time()
    if variant.get("untrained"):
        config = method_of("flow").Config.model_validate(
            {"type": "flow", "flow": {**section, "training": {**section["training"], "lr": 1e-12}}})
    state = fitter("flow")(train, config, 0, _EpochClock())
    fit_s = time.perf_counter() - t0
    print(f"  fit: {fit_s:.0f} s wall, {time.process_time() - c0:.0f} s CPU", file=sys.stderr, flush=True)
    head = load_head(state.params.head.model_dump(mode="json"), state.arrays())
    torch.set_num_threads(1)
    with torch.no_grad():
        head(torch.from_numpy(test[:1]))
        t0 = time.perf_counter()
        out = np.concatenate([head(torch.from_numpy(test[i:i + 1])).numpy() for i in range(len(test))])
        torch_ms = (time.perf_counter() - t0) / len(test) * 1000
    sm = score_head_output({"patch_scores": out}, "patch_scores", work_hw, state.params.smoothing_sigma)
    return sm.image_scores, sm.pixel_maps, fit_s, {"torch": torch_ms, **engine_ms(head, test), **network_ms(state)}, \
        state.params


def engine_ms(head: torch.nn.Module, feats: np.ndarray) -> dict[str, float]:
    """The head alone exported to ONNX and run on one frame's features, 1 thread: median ms of
    onnxruntime and OpenVINO (fp32), the engines the line runs it with."""
    import tempfile

    import onnxruntime as ort

    from engines.backbones.export import export_onnx
    from engines.openvino_engine import import_openvino

    x = np.ascontiguousarray(feats[:1])
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(head, Path(tmp) / "head.onnx", x.shape[1:], "features", ("patch_scores",))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        compiled = import_openvino().Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1,
                                                                            "INFERENCE_PRECISION_HINT": "f32"})
        for name, run in (("onnxruntime", lambda: sess.run(None, {"features": x})),
                          ("openvino", lambda: compiled([x]))):
            run()
            wall, cpu = [], []
            for _ in range(30):
                t0, c0 = time.perf_counter(), time.process_time()
                run()
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            # CPU time: what the head costs a frame on an idle core (wall time on a shared box is not)
            out[name] = float(np.median(cpu) * 1000)
            out[name + "_wall"] = float(np.median(wall) * 1000)
    return out


def network_ms(state, size: int = 256) -> dict[str, float]:
    """OpenVINO fp32, 1 thread, one frame of size x size: process CPU ms (median) of the feature
    network alone and of backbone + the flow head exported as one (what calibrate ships)."""
    import tempfile

    from calibration.features import export_feature_network, export_head_network, network_description
    from engines.openvino_engine import import_openvino
    from inspector.settings import BackboneConfig

    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    core = import_openvino().Core()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        desc = network_description(BackboneConfig())
        plain, _ = export_feature_network(desc, (size, size), Path(tmp) / "backbone.onnx")
        with_head, _ = export_head_network(desc, state, "patch_scores", (size, size), Path(tmp))
        for name, path in (("backbone", plain), ("backbone+flow", with_head)):
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": 1,
                                                             "INFERENCE_PRECISION_HINT": "f32"})
            compiled([x])
            cpu = []
            for _ in range(30):
                c0 = time.process_time()
                compiled([x])
                cpu.append(time.process_time() - c0)
            out[name] = float(np.median(cpu) * 1000)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--variants", nargs="*", default=["c64_k8"], help=f"from {list(VARIANTS)}")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--no-patchcore", action="store_true")
    a = ap.parse_args()
    cache = np.load(a.cache, allow_pickle=False)
    train = cache["train"][:a.train_limit].astype(np.float32)
    test = cache["test"].astype(np.float32)
    work_hw = tuple(int(v) for v in cache["work_hw"])
    print(f"{a.cache.name}: train {train.shape}, test {test.shape}, work {work_hw}")
    rows = []
    if not a.no_patchcore:
        s, m, fit_s, ms = run_patchcore(train, test, work_hw)
        rows.append(("patchcore", metrics(s, m, cache), fit_s, ms, ""))
        print(rows[-1], flush=True)
    for name in a.variants:
        s, m, fit_s, ms, params = run_flow(train, test, work_hw, VARIANTS[name], a.epochs)
        t = params.training
        note = (f"epochs {t.epochs_run} (best {t.best_epoch}), var kept {params.explained_variance:.3f}, "
                f"CPU ms onnxruntime {ms['onnxruntime']:.1f}, wall ms OpenVINO {ms['openvino_wall']:.1f}, "
                f"torch {ms['torch']:.1f}; OpenVINO CPU ms at 256x256: backbone {ms['backbone']:.1f}, "
                f"backbone+flow {ms['backbone+flow']:.1f}")
        ms = ms["openvino"]
        rows.append((name, metrics(s, m, cache), fit_s, ms, note))
        print(rows[-1], flush=True)
    print(f"\n| variant | image AUROC | pixel AUROC | escape @1% FRR | fit s | ms/frame beyond backbone (CPU ms, OpenVINO, 1 thread; PatchCore: its numpy scoring, CPU ms) | note |")
    print("|---|---|---|---|---|---|---|")
    for name, r, fit_s, ms, note in rows:
        print(f"| {name} | {r['image_auroc']:.4f} | {r['pixel_auroc']:.4f} | {r['escape_1pct'] * 100:.1f}% "
              f"({r['frr'] * 100:.1f}%) | {fit_s:.0f} | {ms:.1f} | {note} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
