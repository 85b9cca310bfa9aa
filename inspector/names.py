"""File names as text any log, CSV or database column can hold."""
from __future__ import annotations


def printable_name(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogates) are
    shown as ``\\xNN``. Identity for every valid name, so frame keys stay stable."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
