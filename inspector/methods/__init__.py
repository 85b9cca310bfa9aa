"""Anomaly-detection methods, one module each (the contract: inspector/methods/base.py; the one
list: inspector/methods/registry.py)."""
