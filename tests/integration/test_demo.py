"""The README's first quickstart command ends in `inspector demo`: run it as a user would, in a
fresh folder, and check what it shows — every part recorded by the real daemon, the defective
ones failed, the good ones passed, the corrupt file an error verdict — and that its golden set is
large enough for the default's threshold to hold (with 40 golden parts, 8 held out, the default
rejected 2 of the demo's 6 good parts on a bf16 CPU and ~36% of new good parts)."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

from tests.conftest import daemon_env


def test_the_demo_inspects_every_part_and_its_verdicts_are_right(tmp_path):
    root = tmp_path / "demo"
    p = subprocess.run([sys.executable, "-m", "inspector", "demo", "--dir", str(root)], env=daemon_env(),
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "daemon stopped cleanly (exit 0)" in p.stdout
    with sqlite3.connect(root / "inspector.db") as db:
        rows = db.execute("SELECT origin_name, verdict FROM inspections").fetchall()
    verdicts = dict(rows)
    assert len(verdicts) == 13, rows
    assert verdicts.pop("part-corrupt.png") == "error"
    wrong = {name: v for name, v in verdicts.items() if v != ("pass" if name.endswith("-good.png") else "fail")}
    assert not wrong, (wrong, p.stdout[-3000:])
    assert (root / "bundle" / "report.html").exists()
    assert any((root / "heatmaps").rglob("*.png"))
