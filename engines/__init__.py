"""How a network runs: backbone definitions, ONNX export and the Engine implementations.

Imports nothing from ``inspector`` or ``calibration``.
"""
