"""CNN backbones written here (no torchvision), their weights, and the patch-feature network."""
