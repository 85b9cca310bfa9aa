"""Runtime scorers: features -> image scores and pixel anomaly maps. One module per family."""
