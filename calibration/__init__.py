"""Offline only: golden samples -> model bundle. The daemon never imports this package."""
