"""A config file cannot make the loader spend minutes or gigabytes: its size is capped, YAML
aliases may not expand it past a bound, and an error message quotes at most a short piece of
the bad value. Each case runs in a subprocess with a memory and time cap, so the old behaviour
(60 s and 2 GB for the alias bomb) fails the test instead of taking the machine down."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# billion laughs: 9 levels of 10 aliases each = 10**9 leaves, as the value of an enum field
BOMB = "\n".join(['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
                 + [f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [" + ",".join([f"*{chr(ord('a') + i - 1)}"] * 10) + "]"
                    for i in range(1, 9)]) + "\noutput:\n  layout: *i\n"

_LOAD = """
import json, sys, time
from inspector.errors import ConfigError
from inspector.settings import load_settings
t0 = time.monotonic()
try:
    load_settings(sys.argv[1])
    print(json.dumps({"error": None, "s": time.monotonic() - t0}))
except ConfigError as exc:
    print(json.dumps({"error": str(exc), "s": time.monotonic() - t0}))
"""


def _cap_memory():
    resource.setrlimit(resource.RLIMIT_AS, (1536 * 2**20, 1536 * 2**20))


def load_in_subprocess(path: Path, timeout: float = 20.0) -> dict:
    try:
        p = subprocess.run([sys.executable, "-c", _LOAD, str(path)], capture_output=True, text=True, cwd=ROOT,
                           timeout=timeout, preexec_fn=_cap_memory)
    except subprocess.TimeoutExpired:
        pytest.fail(f"loading {path.name} ran over {timeout} s")
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_alias_bomb_is_refused_at_once(tmp_path):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(BOMB)
    t0 = time.monotonic()
    out = load_in_subprocess(cfg)
    assert time.monotonic() - t0 < 15
    assert out["error"] is not None
    assert out["s"] < 1.0, f"took {out['s']:.2f} s"
    assert "alias" in out["error"]
    assert len(out["error"]) < 400, out["error"][:1000]


def test_recursive_alias_is_refused(tmp_path):
    cfg = tmp_path / "loop.yaml"
    cfg.write_text("output: &o\n  layout: *o\n")
    out = load_in_subprocess(cfg)
    assert out["error"] is not None and "alias" in out["error"]
    assert len(out["error"]) < 400


def test_ordinary_aliases_still_work(tmp_path):
    from inspector.settings import load_settings

    cfg = tmp_path / "ok.yaml"
    cfg.write_text("sources:\n"
                   "  - &cam {type: folder, name: a, inbox: in_a, stable_seconds: 0.5}\n"
                   "  - {<<: *cam, name: b, inbox: in_b}\n")
    s = load_settings(cfg)
    assert [src.name for src in s.sources] == ["a", "b"]
    assert s.sources[1].stable_seconds == 0.5


def test_oversized_config_is_refused_before_parsing(tmp_path):
    cfg = tmp_path / "big.yaml"
    cfg.write_text("# padding\n" * 200_000 + "output: {layout: single}\n")  # ~2 MB
    out = load_in_subprocess(cfg)
    assert out["error"] is not None
    assert "MiB" in out["error"] or "bytes" in out["error"]
    assert out["s"] < 1.0


def test_a_long_bad_value_is_quoted_short(tmp_path):
    cfg = tmp_path / "long.yaml"
    cfg.write_text("output:\n  layout: " + json.dumps("x" * 100_000) + "\n")
    out = load_in_subprocess(cfg)
    assert out["error"] is not None
    assert "output.layout" in out["error"] and "expected" in out["error"]
    assert len(out["error"]) < 400, len(out["error"])


def test_a_long_nested_bad_value_is_quoted_short(tmp_path):
    cfg = tmp_path / "nested.yaml"
    cfg.write_text("output:\n  layout: " + json.dumps([["y" * 50] * 50] * 50) + "\n")
    out = load_in_subprocess(cfg)
    assert out["error"] is not None
    assert len(out["error"]) < 400, len(out["error"])
