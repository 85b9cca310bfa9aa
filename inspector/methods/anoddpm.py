"""AnoDDPM (Wyatt et al., CVPRW 2022) over frozen backbone feature maps: a small diffusion model
learns to remove simplex noise from golden feature maps; a frame's features are diffused part of
the way (step t_lambda, with a fixed simplex-noise field) and denoised in a few deterministic
(DDIM) steps; a defect, never seen in training, is rebuilt as what a good part would show there.
The engine runs backbone + the unrolled denoiser (engines/backbones/heads.py ``anoddpm``) as one
network whose output ``patch_scores`` [N, 1, h, w] is each patch's squared reconstruction error
(mean over channels). Image score = the largest patch error. Arrays: the head's weights ``head.*``.

More than one denoising step is GPU only: each step costs about one backbone pass on a CPU and
bought no accuracy (docs/BENCHMARKS.md), so a head unrolling more than ``CPU_MAX_STEPS`` steps is
refused on a CPU engine by one rule, ``refused_on``: ``check_engine`` applies it to a bundle at load,
``check_calibration_engine`` to the config before calibration fits anything (against the engine
the bundle is calibrated for, the one the line's config selects), and the fit refuses to train
without CUDA (``allow_cpu`` lets tests and the benchmark do both anyway). One step runs anywhere.
"""
from __future__ import annotations

from typing import Literal, Mapping, Optional

import numpy as np
from pydantic import Field

from inspector.errors import BundleError, InspectorError
from inspector.methods.base import (Count, Dim, EngineHead, HeadDescription, HeadParams, HeadState, MethodConfig,
                                    ScoreMap, score_head_output)

NAME = "anoddpm"
HEAD = EngineHead(kind="anoddpm")
CPU_MAX_STEPS = 1  # denoising steps a CPU engine may run per frame


def gpu_only(steps: int) -> str:
    return (f"scorer anoddpm with {steps} denoising steps runs only on a GPU: set engine.type torch with device: "
            f"cuda (or tensorrt) on a machine with an NVIDIA GPU, or recalibrate with anoddpm.denoise_steps: "
            f"{CPU_MAX_STEPS} for a CPU")


def ddim_schedule(t_lambda: int, steps: int) -> np.ndarray:
    """The steps visited from t_lambda down (``steps`` of them, then 0; fewer when t_lambda < steps):
    int [k + 1]. Here, not in the fit: how many steps a config's head unrolls is the runtime's rule."""
    return np.ascontiguousarray(np.unique(np.linspace(0, t_lambda, steps + 1).round().astype(int))[::-1])


class AnoDdpmConfig(MethodConfig):
    """Diffusion over T steps (linear betas); training: random steps in 1..T, simplex noise."""

    width: int = Field(64, ge=8, le=1024)
    diffusion_steps: int = Field(1000, ge=10, le=10_000)  # T
    t_lambda: int = Field(100, ge=1)  # partial diffusion: noised to this step, then denoised (docs/BENCHMARKS.md)
    denoise_steps: int = Field(1, ge=1, le=1000)  # DDIM steps from t_lambda back to 0, unrolled in the graph
    train_steps: int = Field(1500, ge=1)
    batch_size: int = Field(8, ge=1)  # feature maps per step
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    noise_frequency: float = Field(0.125, gt=0.0, le=1.0)  # simplex base frequency, cycles per feature cell
    octaves: int = Field(3, ge=1, le=8)
    threads: int = Field(1, ge=0, le=256)
    allow_cpu: bool = False  # train more than CPU_MAX_STEPS steps on a CPU anyway: tests and benchmarks only


class Config(MethodConfig):
    """Partial diffusion + denoising reconstruction error per patch (several steps: GPU only)."""

    ignored_sections = ("autoencoder", "fanogan")
    type: Literal["reconstruction"] = "reconstruction"
    method: Literal["anoddpm"] = "anoddpm"
    anoddpm: AnoDdpmConfig = AnoDdpmConfig()
    smoothing_sigma: float = Field(4.0, ge=0.0)


class AnoDdpmHeadDescription(HeadDescription):
    kind: Literal["anoddpm"] = "anoddpm"
    width: Dim
    steps: Dim
    grid_hw: list[Dim] = Field(min_length=2, max_length=2)  # the noise field's (h, w): the network's grid


class Params(HeadParams):
    method: Literal["anoddpm"] = "anoddpm"
    head: AnoDdpmHeadDescription
    t_lambda: Count = None
    diffusion_steps: Count = None
    train_steps: Count = None
    final_loss: Optional[float] = None


State = HeadState  # params: Params, head_weights: {"head.<state_dict key>": float32}


def engine_on_gpu(engine) -> bool:
    """torch on CUDA, TensorRT, or onnxruntime whose first provider is CUDA/TensorRT."""
    if engine.kind == "tensorrt":
        return True
    if engine.kind == "torch":
        return getattr(getattr(engine, "device", None), "type", "cpu") == "cuda"
    if engine.kind == "onnxruntime":
        providers = engine.session.get_providers() if getattr(engine, "session", None) else []
        return bool(providers) and providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
    return False


def unrolled_steps(c: AnoDdpmConfig) -> int:
    """The denoising steps the head fitted from ``c`` will unroll (its description's ``steps``)."""
    return len(ddim_schedule(c.t_lambda, c.denoise_steps)) - 1


def refused_on(steps: int, engine) -> bool:
    """The one rule: a head unrolling ``steps`` steps cannot run on ``engine``."""
    return steps > CPU_MAX_STEPS and not engine_on_gpu(engine)


def check_engine(state: State, engine) -> None:
    """BundleError (one line) when the head unrolls more than CPU_MAX_STEPS steps and ``engine``
    does not run on a GPU."""
    steps = state.params.head.steps
    if refused_on(steps, engine):
        raise BundleError(f"{gpu_only(steps)} (this engine: {engine.kind} on the CPU)")


def check_calibration_engine(config: Config, engine) -> None:
    """Before calibration fits anything: InspectorError (one line) when ``check_engine`` would
    refuse the bundle this config makes on ``engine`` (the engine calibration opened from the
    config's ``engine`` section, which the line runs). Where training runs (CUDA or not) does not
    matter here: a bundle trained on a GPU still runs on the configured engine. allow_cpu skips it."""
    c = config.anoddpm
    steps = unrolled_steps(c)
    if not c.allow_cpu and refused_on(steps, engine):
        raise InspectorError(
            f"scorer.anoddpm.denoise_steps {c.denoise_steps}: the bundle would unroll {steps} denoising steps, which "
            f"the configured engine ({engine.kind} on the CPU) refuses at load (more than {CPU_MAX_STEPS} runs only "
            f"on a GPU); set scorer.anoddpm.denoise_steps: {CPU_MAX_STEPS}, or select a GPU engine (engine.type torch "
            f"with device: cuda, or tensorrt) on a machine with an NVIDIA GPU")


def score(state: State, features: Mapping[str, np.ndarray], input_hw: tuple[int, int]) -> ScoreMap:
    """features[output_name]: float32 [N, 1, h, w] reconstruction errors."""
    return score_head_output(features, state.params.output_name, input_hw, state.params.smoothing_sigma)
