"""A file name is whatever the camera (or anyone with write access to the inbox) made it. The
database keeps it exactly; every output a person reads shows its control characters escaped
(so an ESC sequence cannot repaint the terminal, a bidi override cannot reverse what is shown),
and the CSV files neutralise cells a spreadsheet would run as a formula."""
from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from inspector.commands import export as export_cmd
from inspector.commands import history as history_cmd
from inspector.commands import report as report_cmd
from inspector.commands import show as show_cmd
from inspector.names import display_text
from inspector.storage.queries import get_inspection
from tests.db_fixtures import T0, make_verdict, minutes, run_command

ROOT = Path(__file__).resolve().parents[2]

# ESC sequence (colour + clear screen), BEL, C1 CSI (U+009B), bidi override (U+202E), an isolate
# (U+2066), DEL, a tab and a newline
EVIL = "a\x1b[31m\x1b[2Jred\x07\x9b31m\u202egnp.exe\u2066x\x7f\ty\nz.png"
CONTROLS = [chr(c) for c in range(0x20)] + [chr(0x7F)] + [chr(c) for c in range(0x80, 0xA0)] + \
    ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e",
     "\u200f", "\u061c", "\u2028", "\u2029", "\ufeff"]


def assert_no_controls(text: str, *, allow_newlines: bool = True) -> None:
    allowed = {"\n"} if allow_newlines else set()
    bad = sorted({c for c in text if c in CONTROLS and c not in allowed})
    assert not bad, f"raw control characters {[hex(ord(c)) for c in bad]} in output:\n{text!r}"


# ---------------------------------------------------------------- the helper
def test_display_text_escapes_every_control_and_format_character():
    for c in CONTROLS:
        shown = display_text(f"x{c}y")
        assert c not in shown
        assert shown.startswith("x\\") and shown.endswith("y")
    assert display_text("\x1b") == "\\x1b"
    assert display_text("\x9b") == "\\x9b"
    assert display_text("\u202e") == "\\u202e"
    assert display_text("\U000e0041") == "\\U000e0041"  # a tag character (Cf)


def test_display_text_keeps_ordinary_names_as_they_are():
    for name in ("part-0001.png", "Prüfteil ä ß.jpg", "部品_01.png", "cam 1 (left).bmp", "a\\b.png", "x'y\"z.png"):
        assert display_text(name) == name


# ---------------------------------------------------------------- the outputs
@pytest.fixture
def evil_store(store):
    names = [EVIL, "=HYPERLINK(\"evil.example\",\"open\")", "+1+2", "-2+3", "@SUM(A1:A9)", "\tTAB",
             "\rCR", "plain.png"]
    ids = []
    for i, name in enumerate(names):
        v = make_verdict(kind="fail", score=0.9, at=T0 + minutes(i), name=name, regions=((1, 1, 2, 2, 4, 0.9),),
                         error=None)
        ids.append(store.record(v, frame_key=f"k{i}", heatmap_path=None))
    return store, ids, names


def test_the_database_keeps_the_raw_name(evil_store):
    store, ids, names = evil_store
    assert get_inspection(store, ids[0])["origin_name"] == EVIL


def test_history_table_shows_names_escaped(evil_store):
    store, ids, _ = evil_store
    rc, out = run_command(history_cmd, ["--db", store.url, "--limit", "0"])
    assert rc == 0
    assert_no_controls(out)
    assert "a\\x1b[31m" in out  # visible, not interpreted
    assert len(out.splitlines()) == 1 + 8  # header + one line per row: the newline in the name did not split it


def test_show_prints_the_name_escaped(evil_store):
    store, ids, _ = evil_store
    rc, out = run_command(show_cmd, [str(ids[0]), "--db", store.url])
    assert rc == 0
    assert_no_controls(out)
    assert "\\x07" in out and "\\x9b" in out and "\\u202e" in out and "\\u2066" in out and "\\x0a" in out


def test_json_output_carries_the_exact_name_with_escapes(evil_store):
    store, ids, _ = evil_store
    for module, argv in ((show_cmd, [str(ids[0]), "--db", store.url, "--format", "json"]),
                         (history_cmd, ["--db", store.url, "--format", "jsonl"])):
        rc, out = run_command(module, argv)
        assert rc == 0
        assert_no_controls(out)
        assert "\\u202e" in out
    rc, out = run_command(show_cmd, [str(ids[0]), "--db", store.url, "--format", "json"])
    assert json.loads(out)["origin_name"] == EVIL  # a machine reading the JSON gets the name as stored


def _csv_rows(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_history_csv_escapes_controls_and_neutralises_formulas(evil_store):
    store, ids, names = evil_store
    rc, out = run_command(history_cmd, ["--db", store.url, "--format", "csv", "--oldest-first"])
    assert rc == 0
    assert_no_controls(out)
    rows = _csv_rows(out)
    got = [r["origin_name"] for r in rows]
    assert got[0] == display_text(EVIL)
    assert got[1] == "'" + names[1]
    assert got[2:5] == ["'+1+2", "'-2+3", "'@SUM(A1:A9)"]
    assert got[5].startswith("'") or got[5].startswith("\\")  # a leading tab: never a raw tab first
    assert not got[6].startswith("\r")
    assert got[7] == "plain.png"
    # numbers stay numbers: a spreadsheet must still be able to sum them
    assert rows[0]["score"] == "0.9" and rows[0]["region_count"] == "1"
    assert all(not r["captured_at"].startswith("'") for r in rows)


def test_export_csv_escapes_controls_and_neutralises_formulas(evil_store, tmp_path):
    store, ids, names = evil_store
    rc, _ = run_command(export_cmd, ["--db", store.url, "--since", (T0 - minutes(1)).isoformat(),
                                     "--to", str(tmp_path / "x"), "--no-files"])
    assert rc == 0
    text = (tmp_path / "x" / "inspections.csv").read_text(encoding="utf-8")
    assert_no_controls(text)
    got = [r["origin_name"] for r in _csv_rows(text)]
    assert got[1] == "'" + names[1] and got[4] == "'@SUM(A1:A9)" and got[7] == "plain.png"


def test_html_report_shows_names_escaped(evil_store, tmp_path):
    store, ids, _ = evil_store
    out = tmp_path / "r.html"
    rc, _ = run_command(report_cmd, ["--db", store.url, "--since", (T0 - minutes(1)).isoformat(),
                                     "--until", (T0 + minutes(60)).isoformat(), "--out", str(out)])
    assert rc == 0
    html = out.read_text(encoding="utf-8")
    assert_no_controls(html)
    assert "a\\x1b[31m" in html and "\\u202e" in html


# ---------------------------------------------------------------- logs and errors
def test_log_lines_show_names_escaped():
    """The CLI's log format escapes control characters in every message, whoever logs the name."""
    from inspector.cli import SafeFormatter

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("test.escaping")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("%s: refused", EVIL)
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("cannot record %s", EVIL)
    finally:
        logger.removeHandler(handler)
    text = buf.getvalue()
    assert_no_controls(text)
    assert "a\\x1b[31m" in text
    assert "Traceback (most recent call last):\n" in text  # a traceback keeps its lines
    assert text.splitlines()[0].endswith(": refused")  # one record, one line


def test_error_line_of_the_cli_is_escaped(tmp_path):
    bad = tmp_path / "c\x1b]0;owned\x07\u202e.yaml"
    p = subprocess.run([sys.executable, "-m", "inspector", "history", "--config", str(bad)], capture_output=True,
                       text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert_no_controls(p.stderr, allow_newlines=True)
    assert "\\x1b]0;owned\\x07\\u202e" in p.stderr
