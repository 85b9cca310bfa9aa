"""The results database: SQLAlchemy models, the writer/reader ``ResultStore``, queries, migrations.

Never imports cv2 or torch (checked by tests/unit/test_storage_imports.py).
"""
from inspector.storage.database import ResultStore, StorageUnavailable, normalise_url
from inspector.storage.migrations import SCHEMA_VERSION

__all__ = ["ResultStore", "StorageUnavailable", "normalise_url", "SCHEMA_VERSION"]
