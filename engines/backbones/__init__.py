"""CNN backbones written here (no torchvision), their weights, and the patch-feature network."""

# here, not in patch_features, so that describing a network needs no torch import
AGGREGATIONS = ("zero_padded", "edge_mean")  # the first is what new bundles use
