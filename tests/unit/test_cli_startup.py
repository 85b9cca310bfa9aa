"""A mistyped argument is answered at once: parsing a command's arguments imports none of the
heavy libraries (torch, OpenCV, OpenVINO, SQLAlchemy, numpy, ...); only running it does."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from inspector.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "cv2", "openvino", "onnxruntime", "tensorrt", "sqlalchemy", "numpy", "pydantic", "yaml",
         "watchdog", "calibration")

# parse `inspector <command> --bogus` in a fresh interpreter; report the exit code and what got imported
_PROBE = """
import json, sys
from inspector import cli
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(json.loads(HEAVY)))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def _probe(*argv: str) -> dict:
    code = _PROBE.replace("HEAVY", repr(json.dumps(HEAVY)))
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("command", [name for name, _, _ in COMMANDS])
def test_an_unknown_option_imports_no_heavy_library(command):
    out = _probe(command, "--bogus")
    assert out["code"] == 2
    assert out["heavy"] == [], f"`inspector {command} --bogus` imported {out['heavy']} before rejecting it"


def test_help_imports_no_heavy_library():
    out = _probe("history", "--help")
    assert out["code"] == 0
    assert out["heavy"] == []


def test_history_bogus_answers_in_well_under_a_second():
    # best of three: the machine is shared, and one slow start says nothing about the imports
    best = float("inf")
    for _ in range(3):
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, "-m", "inspector", "history", "--bogus"], capture_output=True,
                           text=True, cwd=ROOT, timeout=60)
        best = min(best, time.monotonic() - t0)
        assert p.returncode == 2
        assert "unrecognized arguments: --bogus" in p.stderr
        assert "Traceback" not in p.stderr
    assert best < 1.5, f"`inspector history --bogus` took {best:.2f} s"
