"""Shared data for the scorer-family tests: synthetic golden parts and a planted-defect part,
their patch features from the torch backbone at the test size (computed once per process)."""
from __future__ import annotations

import functools

import cv2
import numpy as np

from tests.conftest import TEST_SIZE

# the planted defect: a bright disc centred here (x, y) in a 128x128 part, radius in pixels
DEFECT_XY = (44, 76)
DEFECT_R = 9


def plant_defect(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    cv2.circle(out, DEFECT_XY, DEFECT_R, (240, 240, 245), -1, cv2.LINE_AA)
    return out


@functools.lru_cache(maxsize=1)
def _net():
    from calibration.features import network_description
    from engines.backbones.patch_features import build_patch_feature_net
    from inspector.settings import BackboneConfig

    return build_patch_feature_net(network_description(BackboneConfig()))


def preprocess(images) -> np.ndarray:
    from inspector.preprocess import Preprocessor, PreprocessSpec

    pre = Preprocessor(PreprocessSpec(TEST_SIZE, TEST_SIZE, None))
    return np.stack([pre.prepare(im)[0] for im in images])


def features(images) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _net()(torch.from_numpy(preprocess(images))).numpy()


@functools.lru_cache(maxsize=1)
def data():
    """(golden features [16, D, 16, 16], test features [7, D, 16, 16], test images, labels):
    the test set is 6 new good parts and the first one with a planted defect (label 1)."""
    from calibration.synthetic import make_part

    rng = np.random.default_rng(1)
    golden = [make_part(rng, size=TEST_SIZE) for _ in range(16)]
    rng = np.random.default_rng(7)
    good = [make_part(rng, size=TEST_SIZE) for _ in range(6)]
    test = good + [plant_defect(good[0])]
    return features(golden), features(test), test, np.array([0] * 6 + [1])


def peak_is_at_defect(pixel_map: np.ndarray, tolerance: int = 16) -> bool:
    y, x = np.unravel_index(int(pixel_map.argmax()), pixel_map.shape)
    return abs(x - DEFECT_XY[0]) <= tolerance and abs(y - DEFECT_XY[1]) <= tolerance


def engine_features(images, settings) -> np.ndarray:
    """Patch features of ``images`` as calibrate computes the golden set's: the feature network
    exported to ONNX and run by ``settings.engine`` in batches of its max_batch. A head trained on
    these is the head calibrate trains (training amplifies the ~1e-6 rounding differences between
    engines to a few % of the map; see test_autoencoder's round trip)."""
    import tempfile
    from pathlib import Path

    from calibration.features import (INPUT_NAME, OUTPUT_NAME, export_feature_network, extract_features,
                                      network_description)
    from engines.base import EngineSpec
    from engines.registry import build_engine
    from inspector.preprocess import Preprocessor, PreprocessSpec

    description = network_description(settings.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path, dim = export_feature_network(description, (TEST_SIZE, TEST_SIZE), Path(tmp) / "backbone.onnx")
        spec = EngineSpec(str(onnx_path), INPUT_NAME, (3, TEST_SIZE, TEST_SIZE), (OUTPUT_NAME,),
                          network={**description, "feature_dim": dim})
        engine = build_engine(settings.engine, spec)
        try:
            return extract_features(engine, Preprocessor(PreprocessSpec(TEST_SIZE, TEST_SIZE, None)), images,
                                    batch=engine.spec.max_batch)
        finally:
            engine.close()


def head_scores(params: dict, arrays: dict, feats: np.ndarray) -> np.ndarray:
    """A fitted head (Deep SVDD, autoencoder) run in torch on features: patch_scores [N, 1, h, w]."""
    import torch

    from engines.backbones.heads import load_head

    with torch.no_grad():
        return load_head(params["head"], arrays)(torch.from_numpy(feats)).numpy()


def fitted(config, feats: np.ndarray, seed: int = 0):
    """The method ``config`` names fitted on ``feats``, bound to its state (a registry Scorer)."""
    from calibration.methods import NoProgress, fitter
    from inspector.methods.registry import Scorer, method_of

    return Scorer(method_of(config.method), fitter(config.method)(feats, config, seed, NoProgress()))


def fit_params_arrays(config, feats: np.ndarray, seed: int = 0) -> tuple[dict, dict]:
    """The fitted state as a bundle stores it: (params as JSON data, arrays)."""
    state = fitted(config, feats, seed).state
    return state.params.model_dump(mode="json"), state.arrays()


def scorer_of(params: dict, arrays: dict):
    """A Scorer from stored params (validated as a manifest validates them) and arrays."""
    from pydantic import TypeAdapter

    from inspector.methods.registry import ScorerParams, scorer_from_bundle

    return scorer_from_bundle(TypeAdapter(ScorerParams).validate_python(params), arrays)
