"""The 3x3 aggregation of the patch features: new bundles count the zero padding at the map's
border (as PatchCore's reference code and anomalib do), bundles made before keep averaging the
cells inside the map, so their features and thresholds stay as they were."""
import torch

from calibration.features import network_description
from engines.backbones.patch_features import build_patch_feature_net
from inspector.settings import BackboneConfig


def _features(description: dict) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        return build_patch_feature_net(description)(x)[0]


def test_new_bundles_shrink_border_cells_by_the_zero_padding():
    desc = network_description(BackboneConfig())
    assert desc["aggregation"] == "zero_padded"
    old = dict(desc)
    del old["aggregation"]  # a manifest written before the field existed
    new_f, old_f = _features(desc), _features(old)
    c8 = 40  # the stride-8 channels (the stride-16 part is upsampled, which mixes border cells in)
    # inside the map both averages see nine real cells
    assert torch.allclose(new_f[:c8, 1:-1, 1:-1], old_f[:c8, 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(new_f, old_f, atol=1e-3)
    # a corner cell averages 4 real cells of 9, an edge cell 6 of 9
    assert torch.allclose(new_f[:c8, 0, 0], old_f[:c8, 0, 0] * 4 / 9, atol=1e-5)
    assert torch.allclose(new_f[:c8, 0, 5], old_f[:c8, 0, 5] * 6 / 9, atol=1e-5)


def test_unknown_aggregation_is_refused():
    import pytest

    desc = dict(network_description(BackboneConfig()), aggregation="median")
    with pytest.raises(ValueError, match="aggregation"):
        build_patch_feature_net(desc)
