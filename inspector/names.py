"""File names as text any log, CSV or database column can hold, and as text a person may be shown."""
from __future__ import annotations

import unicodedata


def printable_name(name: str) -> str:
    """``name`` as valid UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogates) are
    shown as ``\\xNN``. Identity for every valid name, so frame keys stay stable."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _needs_escape(ch: str) -> bool:
    # Cc: C0, DEL, C1 (U+009B is a one-byte CSI to many terminals); Cf: bidi overrides and
    # isolates, zero-width marks, BOM, tags; Zl/Zp: line/paragraph separators; Cs: lone surrogates
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


def _escape_char(ch: str) -> str:
    n = ord(ch)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def display_text(text: str) -> str:
    """``text`` as it may be shown to a person (terminal, log, HTML, CSV): control and format
    characters as visible escapes (``\\x1b``, ``\\u202e``), everything else as is. The database
    keeps names raw; JSON output carries them exactly (escaped by the JSON encoder)."""
    try:
        text = printable_name(text)
    except UnicodeEncodeError:  # a lone surrogate that is no undecodable byte: escaped below
        pass
    if text.isprintable():  # the common case: nothing to escape (isprintable is False for all of the above)
        return text
    return "".join(_escape_char(ch) if _needs_escape(ch) else ch for ch in text)
