"""The daemon refuses a bundle whose manifest does not validate: one line on stderr, non-zero
exit, no traceback (every field's mutations: tests/unit/test_manifest.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import daemon_env
from tests.integration.daemon_helpers import make_workspace
from tests.unit.test_manifest import DELETE, NAN, mutated, reseal, write_manifest


def nan_threshold(manifest: dict) -> dict:
    """The reported case: thresholds.image NaN (the checksum made to match) started the daemon
    and passed every part, a defect scoring 59.4 included."""
    return reseal(mutated(mutated(manifest, "thresholds.image", NAN), "thresholds.image_rule.value", NAN))


def older_bundle(manifest: dict) -> dict:
    """What inspector wrote before the manifest was typed and covered itself."""
    return {**mutated(manifest, "manifest_sha256", DELETE), "schema_version": 1}


@pytest.mark.parametrize("break_manifest,words", [(nan_threshold, ["thresholds.image", "finite"]),
                                                   (older_bundle, ["schema version 1", "recalibrate"])])
def test_daemon_refuses_a_bad_manifest_with_one_line(tmp_path, bundle_dir, break_manifest, words):
    real_manifest = json.loads((bundle_dir / "manifest.json").read_text(encoding="utf-8"))
    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    write_manifest(bundle, break_manifest(real_manifest))
    ws = make_workspace(tmp_path, bundle)
    proc = subprocess.run([sys.executable, "-m", "inspector", "run", "--config", str(ws.config)], env=daemon_env(),
                          capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    lines = proc.stderr.splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert lines[0].startswith(f"inspector run: error: bundle {bundle}: manifest.json "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
