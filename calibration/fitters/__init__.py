"""Offline fitters: golden features -> a scorer's arrays and parameters (one module per method)."""
