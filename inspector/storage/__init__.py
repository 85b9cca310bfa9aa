"""The results database: SQLAlchemy models, the writer/reader ``ResultStore``, queries, migrations.

Never imports cv2 or torch (checked by tests/unit/test_storage_imports.py). The names below are
loaded on first use, so a command that only parses its arguments (``locate``, ``fields``)
does not pay for importing SQLAlchemy.
"""
from __future__ import annotations

import importlib

_LAZY = {"ResultStore": "inspector.storage.database", "StorageUnavailable": "inspector.storage.database",
         "normalise_url": "inspector.storage.database", "SCHEMA_VERSION": "inspector.storage.migrations"}

__all__ = ["ResultStore", "StorageUnavailable", "normalise_url", "SCHEMA_VERSION"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
