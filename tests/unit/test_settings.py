"""Config errors name the key, the bad value and what is allowed, in one line."""
from pathlib import Path

import pytest

from inspector.errors import ConfigError
from inspector.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "inspector.example.yaml"


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_example_config_validates():
    s = load_settings(EXAMPLE)
    assert s.engine.type == "openvino" and s.engine.precision == "auto" and s.sources
    # the example spells out the defaults: it must not drift from them
    defaults = Settings()
    assert s.engine == defaults.engine and s.runtime == defaults.runtime


@pytest.mark.parametrize("path", sorted((EXAMPLE.parent / "scorers").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_scorer_example_validates(path):
    # the README and BENCHMARKS point users at these files: each must load as it is
    assert load_settings(path).scorer.type


@pytest.mark.parametrize("text,needles", [
    ("engine:\n  type: tensorrtt\n", ["engine", "'tensorrtt'", "onnxruntime", "tensorrt"]),
    ("sources:\n  - inbox: in\n    recursve: true\n", ["sources.0.recursve", "unknown key"]),
    ("preprocess:\n  size: [100, 256]\n", ["preprocess.size", "multiple of 32"]),
    ("engine:\n  threads: -1\n", ["engine.threads", "-1", "greater than or equal to 0"]),
    ("runtime:\n  stall_seconds: 0\n", ["runtime.stall_seconds", "0", "greater than or equal to 1"]),
    ("bundel: x\n", ["bundel", "unknown key"]),
    ("sources: [\n", ["not valid YAML", "line"]),
    ("- just\n- a list\n", ["top level must be a mapping"]),
])
def test_errors_read_well(tmp_path, text, needles):
    with pytest.raises(ConfigError) as exc:
        load_settings(write(tmp_path, text))
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, f"{n!r} missing from: {msg}"


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    s = load_settings(write(tmp_path, "bundle: b\nsources:\n  - inbox: in\n"))
    assert s.bundle == tmp_path / "b"
    assert s.sources[0].inbox == tmp_path / "in"
    assert s.database.url == f"sqlite:///{tmp_path / 'inspector.db'}"
    assert s.output.done_dir == tmp_path / "done"
