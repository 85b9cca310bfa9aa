"""AnoDDPM (reconstruction / anoddpm): more than one denoising step is GPU only. On a CPU such a
fit refuses (one line naming what to do) and the daemon's pipeline refuses such a bundle with the
torch engine (and onnxruntime); one step runs on a CPU. With allow_cpu (tests, benchmarks) it
trains, its head is the partial-diffusion reconstruction error, and the head network gives the
same output on onnxruntime and the torch engine. Simplex noise: unit variance, spatially smooth,
seeded. A real multi-step GPU run: tests/gpu/test_anoddpm_gpu.py."""
import numpy as np
import pytest
import torch

from calibration.methods.simplex import simplex_noise
from inspector.errors import BundleError, InspectorError
from tests.conftest import FP32_ENGINE, small_settings
from tests.unit._scorer_data import data, fit_params_arrays, head_scores, preprocess

TINY = {"width": 16, "train_steps": 20, "batch_size": 4, "t_lambda": 100, "denoise_steps": 3}


def _settings(**over):
    return small_settings(scorer={"type": "reconstruction", "method": "anoddpm",
                                  "anoddpm": {**TINY, "allow_cpu": True, **over}}, engine=FP32_ENGINE)


def test_simplex_noise_is_unit_variance_smooth_and_seeded():
    a = simplex_noise(np.random.default_rng(3), (4, 32, 32))
    b = simplex_noise(np.random.default_rng(3), (4, 32, 32))
    np.testing.assert_array_equal(a, b)
    assert np.allclose(a.std(axis=(1, 2)), 1.0, atol=1e-4) and np.allclose(a.mean(axis=(1, 2)), 0.0, atol=1e-4)
    neighbour = np.corrcoef(a[:, :, :-1].ravel(), a[:, :, 1:].ravel())[0, 1]
    assert neighbour > 0.5  # Gaussian noise: ~0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the fit trains there")
def test_fit_refuses_on_a_cpu_in_one_line():
    from calibration.methods import NoProgress, fitter

    config = _settings(allow_cpu=False).scorer
    with pytest.raises(InspectorError) as err:
        fitter("anoddpm")(data()[0], config, 0, NoProgress())
    msg = str(err.value)
    assert "\n" not in msg and "3 denoising steps runs only on a GPU" in msg and "device: cuda" in msg
    assert "no CUDA device" in msg and "denoise_steps: 1" in msg


def test_head_is_partial_diffusion_reconstruction_error():
    params, arrays = fit_params_arrays(_settings().scorer, seed=0, feats=data()[0])
    from engines.backbones.heads import load_head

    head = load_head(params["head"], arrays)
    assert head.steps == 3 and float(head.alpha_bars[-1]) == 1.0 and float(head.timesteps[0]) == 100.0
    x = torch.from_numpy(data()[1][:2])
    with torch.no_grad():
        z = head.norm(x)
        np.testing.assert_allclose(head(x).numpy(), ((head.reconstruct(z) - z) ** 2).mean(1, keepdim=True).numpy(),
                                   rtol=1e-6)
    out = head_scores(params, arrays, data()[1])
    assert out.shape == (7, 1, 16, 16) and np.isfinite(out).all()


@pytest.fixture(scope="module")
def ddpm_bundle(tmp_path_factory, golden_dir):
    from calibration.calibrate import calibrate

    out = tmp_path_factory.mktemp("ddpm") / "bundle"
    calibrate(_settings(), golden_dir, out, progress=False)
    return out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_daemon_pipeline_refuses_cpu_engines_in_one_line(ddpm_bundle):
    from engines.torch_engine import TorchEngineConfig
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline

    bundle = load_bundle(ddpm_bundle)
    for config in (TorchEngineConfig(device="cpu"), TorchEngineConfig(), _settings().engine):
        with pytest.raises(BundleError) as err:
            build_pipeline(bundle, config)
        msg = str(err.value)
        assert "\n" not in msg and "runs only on a GPU" in msg and "engine.type torch with device: cuda" in msg


def test_head_parity_across_engines(ddpm_bundle):
    """The bundle's network (backbone + unrolled denoiser) on onnxruntime and the torch engine
    (CPU; engines used directly: the daemon's pipeline refuses CPU engines for this method)."""
    from engines.registry import build_engine
    from engines.torch_engine import TorchEngineConfig
    from inspector.bundle import load_bundle

    bundle = load_bundle(ddpm_bundle)
    assert bundle.manifest.network.as_dict()["head"]["kind"] == "anoddpm"
    x = preprocess(data()[2])
    outs = {}
    for name, config in (("onnxruntime", _settings().engine), ("torch", TorchEngineConfig(device="cpu"))):
        engine = build_engine(config, bundle.engine_spec(max_batch=4))
        try:
            outs[name] = engine.run(x)["patch_scores"]
        finally:
            engine.close()
    np.testing.assert_allclose(outs["torch"], outs["onnxruntime"], rtol=1e-3,
                               atol=1e-4 * float(np.abs(outs["onnxruntime"]).max()))


def test_one_step_runs_on_a_cpu_engine(tmp_path, golden_dir):
    from calibration.calibrate import calibrate
    from engines.torch_engine import TorchEngineConfig
    from inspector.bundle import load_bundle
    from inspector.runtime import build_pipeline

    calibrate(_settings(allow_cpu=False, denoise_steps=1), golden_dir, tmp_path / "b", progress=False)
    bundle = load_bundle(tmp_path / "b")
    assert bundle.manifest.network.as_dict()["head"]["steps"] == 1
    pipeline = build_pipeline(bundle, TorchEngineConfig(device="cpu"))
    pipeline.engine.close()


def test_calibrate_refuses_steps_the_configured_cpu_engine_cannot_run_before_any_fitting(monkeypatch, golden_dir,
                                                                                         tmp_path):
    """Where training would run (CUDA here or not) does not decide it: the bundle runs on the
    configured engine, and check_engine's rule says a CPU engine refuses 3 steps at load. So
    calibrate stops before fitting (and before extracting features), in one line naming the
    setting; a GPU engine (check_engine passes) and allow_cpu go on to the fit."""
    import calibration.calibrate as calibrate_module
    from calibration.calibrate import calibrate
    from inspector.methods import anoddpm

    fits = []

    def fit_spy(*args, **kwargs):
        fits.append(args)
        raise RuntimeError("fit reached")

    monkeypatch.setattr(calibrate_module, "fit_method", fit_spy)
    with pytest.raises(InspectorError) as err:
        calibrate(_settings(allow_cpu=False), golden_dir, tmp_path / "b", progress=False)
    msg = str(err.value)
    assert not fits, "calibrate fitted a bundle its engine will refuse"
    assert "\n" not in msg and "scorer.anoddpm.denoise_steps 3" in msg and "onnxruntime on the CPU" in msg
    assert "denoise_steps: 1" in msg and "GPU engine" in msg
    assert not (tmp_path / "b").exists()
    # the same rule as check_engine: on an engine it takes for a GPU, calibration goes on to the fit
    monkeypatch.setattr(anoddpm, "engine_on_gpu", lambda engine: True)
    with pytest.raises(RuntimeError, match="fit reached"):
        calibrate(_settings(allow_cpu=False), golden_dir, tmp_path / "b", progress=False)
    monkeypatch.setattr(anoddpm, "engine_on_gpu", lambda engine: False)
    with pytest.raises(RuntimeError, match="fit reached"):  # allow_cpu: tests and benchmarks
        calibrate(_settings(allow_cpu=True), golden_dir, tmp_path / "b", progress=False)
    # t_lambda below the steps asked for unrolls fewer: 1 step runs on a CPU, and is not refused
    with pytest.raises(RuntimeError, match="fit reached"):
        calibrate(_settings(allow_cpu=False, t_lambda=1), golden_dir, tmp_path / "b", progress=False)
    assert len(fits) == 3
