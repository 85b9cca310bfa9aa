"""Golden images -> the network's patch features, through the same Engine the daemon uses."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Collection, Optional, Sequence

import numpy as np

from calibration.ahead import made_ahead
from calibration.tile_memo import TileMemo
from engines.backbones import AGGREGATIONS
from engines.backbones.weights import resolve_weights_path
from engines.hashing import file_sha256
from inspector.preprocess import Preprocessor

INPUT_NAME = "images"
OUTPUT_NAME = "features"


def network_description(backbone_config) -> dict:
    """The JSON description of the feature network stored in the manifest (the torch engine
    rebuilds the network from it; the other engines read the ONNX)."""
    weights = resolve_weights_path(backbone_config.name, backbone_config.weights)
    return {
        "kind": "patch_features",
        "backbone": backbone_config.name,
        "weights": str(backbone_config.weights) if backbone_config.weights else None,
        "weights_sha256": file_sha256(weights),
        "feature_dim": backbone_config.feature_dim,
        "layers": "stride 8 + stride 16, 3x3 average aggregation",
        "aggregation": AGGREGATIONS[0],
        "stride": 8,
    }


def export_feature_network(description: dict, input_hw: tuple[int, int], out: Path) -> tuple[Path, int]:
    """Build the torch network, export ONNX to ``out``; returns (path, feature dim)."""
    # torch is imported here, not with this module: calibrate imports it on the thread that exports
    # while the golden images are read (calibration/network.py)
    from engines.backbones.export import export_onnx
    from engines.backbones.patch_features import build_patch_feature_net

    net = build_patch_feature_net(description)
    export_onnx(net, out, (3, *input_hw), INPUT_NAME, (OUTPUT_NAME,))
    return out, net.feature_dim


def run_images(engine, preprocessor: Preprocessor, images: Sequence[np.ndarray], *, batch: int = 8,
               progress: Optional[Callable[[int], None]] = None, memo: Optional[TileMemo] = None,
               keep: Collection[int] = ()) -> dict[str, np.ndarray]:
    """images (BGR/grey uint8, any size) -> every engine output, {name: float32 [N, ...]}; with
    tiling, the tiles' outputs stitched into one map per image (as the daemon's pipeline does).
    The next batch is preprocessed on a thread while the engine runs this one (OpenCV and the
    engine both release the GIL), and the outputs go straight into one array per name. With a
    ``memo`` (of this engine), the tiles of the images numbered in ``keep`` are kept in it."""
    keep = set(keep)
    per_image = preprocessor.grid.n_tiles

    def prepare(s: int):
        works = [preprocessor.prepare(im)[0] for im in images[s:s + batch]]
        return len(works), preprocessor.tiles(works)

    def run(s: int, tiles: np.ndarray) -> dict[str, np.ndarray]:
        if memo is None:
            return engine.run(tiles)
        kept = np.repeat([s + j in keep for j in range(len(tiles) // per_image)], per_image)
        return memo.run(tiles, kept)

    out: dict[str, np.ndarray] = {}
    starts = range(0, len(images), batch)
    for (n, tiles), s in zip(made_ahead(prepare, starts, "preprocess"), starts):
        outputs = preprocessor.grid.stitch(run(s, tiles), n)
        for name, arr in outputs.items():
            if name not in out:
                out[name] = np.empty((len(images), *arr.shape[1:]), arr.dtype)
            out[name][s:s + n] = arr
        if progress:
            progress(n)
    return out


def extract_features(engine, preprocessor: Preprocessor, images: Sequence[np.ndarray], *, batch: int = 8,
                     progress: Optional[Callable[[int], None]] = None, memo: Optional[TileMemo] = None,
                     keep: Collection[int] = ()) -> np.ndarray:
    """images (BGR/grey uint8, any size) -> features float32 [N, D, h, w] (memo, keep: run_images)."""
    return run_images(engine, preprocessor, images, batch=batch, progress=progress, memo=memo,
                      keep=keep)[OUTPUT_NAME]


def export_head_network(description: dict, state, output_name: str, input_hw: tuple[int, int],
                        workdir: Path) -> tuple[Path, dict]:
    """Export backbone + a head method's fitted head (``state.network_head()``) as one ONNX
    network in ``workdir``, output ``output_name``, with the head weights beside it in
    arrays.npz (where the torch engine reads them); returns (onnx path, the network's
    description for the manifest)."""
    from engines.backbones.export import export_onnx
    from engines.backbones.heads import build_head_network

    head, weights = state.network_head()
    net_description = {**description, "kind": "patch_features_head", "head": head}
    np.savez(workdir / "arrays.npz", **weights)
    net = build_head_network(net_description, arrays=weights)
    return export_onnx(net, workdir / "network.onnx", (3, *input_hw), INPUT_NAME, (output_name,)), net_description
