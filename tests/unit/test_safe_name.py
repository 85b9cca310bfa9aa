"""safe_name: the name a frame gets in done/ or quarantine/ — safe to create, still recognisable."""
import os
import unicodedata

import pytest

from inspector.outputs import safe_name


@pytest.mark.parametrize("inbox_name,stored", [
    ("部品-ü.png", "部品-ü.png"),  # letters of any script are kept
    ("ö.png", "ö.png"),
    ("cam1_0001.png", "cam1_0001.png"),
    ("Δείγμα 7.jpg", "Δείγμα_7.jpg"),  # a space is not kept
    ("नमूना.png", "नमूना.png"),  # Devanagari vowel signs are combining marks: kept with their letters
])
def test_letters_of_any_script_are_kept(inbox_name, stored):
    assert safe_name(inbox_name) == stored


def test_decomposed_name_is_stored_composed():
    nfd = unicodedata.normalize("NFD", "Prüfteil-ö.png")
    assert nfd != "Prüfteil-ö.png"  # the test is about a really decomposed name
    assert safe_name(nfd) == unicodedata.normalize("NFC", "Prüfteil-ö.png")


@pytest.mark.parametrize("inbox_name,stored", [
    ("★.png", "frame.png"),  # nothing left of the stem: a generic one, the extension stays
    ("..png", "frame.png"),
    ("%%%.tiff", "frame.tiff"),
    ("README", "README"),
])
def test_extension_is_always_kept(inbox_name, stored):
    assert safe_name(inbox_name) == stored


@pytest.mark.parametrize("hostile", ["../../etc/passwd", "a/b\\c.png", "x\ny.png", "x\u202egnp.exe", "..", ".",
                                     "a\x00b.png", "\u200b.png"])
def test_hostile_names_cannot_escape_or_hide(hostile):
    name = safe_name(hostile)
    assert name not in ("", ".", "..")
    assert os.sep not in name and "\\" not in name and "\n" not in name and "\x00" not in name
    # no invisible or direction-changing characters (Cf), no separators or controls
    assert not [c for c in name if unicodedata.category(c)[0] in "CZ"], name


def test_long_names_fit_the_filesystem_and_keep_the_end():
    name = "部品" * 200 + "-0042.png"  # 1200+ bytes in UTF-8: over the 255-byte file name limit
    stored = safe_name(name)
    assert len(stored.encode("utf-8")) <= 120
    assert stored.endswith("-0042.png")  # the camera's counter and the extension survive
