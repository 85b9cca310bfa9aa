"""The feature network calibration runs: exported to ONNX and opened in the configured engine, and
``NetworkAhead``, which does that while the golden images are still being read.

Reading a golden folder keeps every core decoding; exporting the network (importing torch, the
ONNX export, the engine's compile) is mostly one core's work, and on bottle's set takes about as
long. The network's input is one tile of the geometry, which needs the golden frames' size: the
first image's size is the guess, which holds wherever one camera gives one size; where the whole
set's geometry turns out otherwise, the guess is closed and the network exported again.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from calibration.features import INPUT_NAME, OUTPUT_NAME, export_feature_network, export_head_network, network_description
from calibration.geometry import choose_geometry
from calibration.golden import list_images
from engines.base import EngineSpec
from engines.registry import build_engine
from inspector.decode import read_image_file

log = logging.getLogger(__name__)


@contextmanager
def opened_engine(engine_config, spec: EngineSpec) -> Iterator:
    """An engine that is closed when the block ends, however it ends."""
    engine = build_engine(engine_config, spec)
    try:
        yield engine
    finally:
        engine.close()


@dataclass
class Network:
    """The feature network as calibration exported it: description (for the manifest), ONNX
    file, input (H, W), and the folder it lives in until the bundle is written."""

    description: dict
    onnx: Path
    input_hw: tuple[int, int]
    workdir: Path

    def spec(self, onnx: Path, output_name: str, description: dict) -> EngineSpec:
        return EngineSpec(str(onnx), INPUT_NAME, (3, *self.input_hw), (output_name,), network=description)

    def with_head(self, state, method) -> tuple[Path, dict, str]:
        """(ONNX, description, output name) of the network the daemon runs for ``state``: the
        feature network, or backbone + the method's declared head exported as one."""
        if method.HEAD is None:
            return self.onnx, self.description, OUTPUT_NAME
        onnx, description = export_head_network(self.description, state, method.HEAD.output_name,
                                                self.input_hw, self.workdir)
        return onnx, description, method.HEAD.output_name


def export_network(settings, input_hw: tuple[int, int], workdir: Path):
    """(Network, engine): the feature network for tiles of ``input_hw`` exported into ``workdir``
    and opened in ``settings.engine``; the caller closes the engine."""
    description = network_description(settings.backbone)
    onnx, description["feature_dim"] = export_feature_network(description, input_hw, workdir / "backbone.onnx")
    network = Network(description, onnx, input_hw, workdir)
    return network, build_engine(settings.engine, network.spec(onnx, OUTPUT_NAME, description))


class NetworkAhead:
    """``export_network`` on a thread from entering, for the input the first golden image's
    geometry gives. ``take(input_hw)``: (Network, engine) if that is the input the whole set
    needs (the engine is then the caller's to close), else None. Leaving the block waits for the
    thread and closes an engine not taken."""

    def __init__(self, settings, golden_dir: Path, workdir: Path):
        self._settings, self._golden_dir, self._workdir = settings, Path(golden_dir), workdir
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="network-ahead")
        self._taken = False

    def __enter__(self) -> "NetworkAhead":
        self._future = self._pool.submit(self._make)
        return self

    def _first_input_hw(self) -> Optional[tuple[int, int]]:
        pre = self._settings.preprocess
        paths = list_images(self._golden_dir)
        if not paths:
            return None
        first = read_image_file(str(paths[0]), max_pixels=pre.max_pixels)
        spec = choose_geometry(pre, self._settings.calibration.min_defect_px, [first.shape]).spec
        return spec.height, spec.width

    def _make(self):
        input_hw = self._first_input_hw()
        return None if input_hw is None else export_network(self._settings, input_hw, self._workdir)

    def _result(self):
        try:
            return self._future.result()
        except Exception as exc:  # the same export on the caller's thread says what went wrong
            log.debug("network export ahead of reading failed: %s", exc)
            return None

    def take(self, input_hw: tuple[int, int]):
        made, self._taken = self._result(), True
        if made is not None and made[0].input_hw == tuple(input_hw):
            return made
        if made is not None:
            log.info("the golden set's network input %s is not the first image's %s: exporting again",
                     tuple(input_hw), made[0].input_hw)
            made[1].close()
            made[0].onnx.unlink(missing_ok=True)
        return None

    def __exit__(self, *exc) -> None:
        self._pool.shutdown(wait=True)
        made = None if self._taken else self._result()
        if made is not None:  # calibration failed before it needed the network
            made[1].close()
