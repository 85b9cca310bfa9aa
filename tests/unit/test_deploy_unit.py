"""deploy/: the systemd unit verifies and keeps its key directives; sysusers/tmpfiles snippets
parse; install.sh is shellcheck-clean and its dry run changes nothing.

systemd-analyze and shellcheck are optional on a developer machine (the tests skip, naming the
package); CI installs them: apt-get install systemd shellcheck.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNIT = DEPLOY / "inspector.service"
EXEC = "/opt/inspector/venv/bin/inspector run --config /etc/inspector/inspector.yaml"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze not installed (apt-get install systemd)")


def directives(path: Path) -> dict[str, dict[str, list[str]]]:
    """section -> key -> all values (a key may repeat in a unit file)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        assert section is not None, f"directive outside a section: {line}"
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def verifiable_copy(tmp_path: Path) -> Path:
    """verify checks that ExecStart's binary exists; point it at one that does (same args)."""
    text = UNIT.read_text()
    assert f"ExecStart={EXEC}" in text
    copy = tmp_path / "inspector.service"
    copy.write_text(text.replace("ExecStart=/opt/inspector/venv/bin/inspector ", f"ExecStart={shutil.which('true')} "))
    return copy


def test_key_directives():
    d = directives(UNIT)
    svc = d["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "User": "inspector", "StateDirectory": "inspector", "LogsDirectory": "inspector",
        "ConfigurationDirectory": "inspector", "ExecStart": EXEC, "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "DevicePolicy": "closed", "SupplementaryGroups": "video",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    for key, value in expected.items():
        assert one.get(key) == value, f"{key}={one.get(key)!r}, expected {value!r}"
    assert "@system-service" in svc["SystemCallFilter"]
    assert svc["ReadWritePaths"] == ["/srv/inspector"]
    allowed = " ".join(svc["DeviceAllow"])
    assert "char-nvidia*" in allowed and "char-video4linux" in allowed
    assert "MemoryDenyWriteExecute" not in svc  # breaks CUDA/JIT; see the comment in the unit
    assert d["Install"]["WantedBy"] == ["multi-user.target"]


@needs_analyze
def test_systemd_analyze_verify(tmp_path):
    copy = verifiable_copy(tmp_path)
    r = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    # verify prints problems with other units on the machine too; only ours matter
    ours = [ln for ln in (r.stdout + r.stderr).splitlines() if "inspector.service" in ln]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


@needs_analyze
def test_security_exposure_stays_low(tmp_path):
    copy = verifiable_copy(tmp_path)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(copy)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for inspector\.service: ([0-9.]+)", r.stdout)
    if m is None and "--offline" in r.stderr:
        pytest.skip("systemd-analyze security --offline needs systemd >= 250")
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0, r.stdout


@needs_analyze
def test_sysusers_and_tmpfiles_apply_in_a_scratch_root(tmp_path):
    for tool in ("systemd-sysusers", "systemd-tmpfiles"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install systemd)")
    (tmp_path / "etc").mkdir()
    r = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", "-"],
                       input=(DEPLOY / "inspector.sysusers").read_text(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    assert re.search(r"^inspector:x:\d+:\d+:.*:/var/lib/inspector:/usr/sbin/nologin$", passwd, re.M)
    assert re.search(r"^video:x:\d+:.*\binspector\b", (tmp_path / "etc/group").read_text(), re.M)
    r = subprocess.run(["systemd-tmpfiles", f"--root={tmp_path}", "--create", "-"],
                       input=(DEPLOY / "inspector.tmpfiles").read_text(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for sub in ("inbox", "done", "quarantine", "heatmaps"):
        assert (tmp_path / "srv/inspector" / sub).is_dir()
    assert (tmp_path / "srv/inspector/inbox").stat().st_mode & 0o7777 == 0o2770


def test_install_script_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    r = subprocess.run(["shellcheck", "-x", str(DEPLOY / "install.sh")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("args, must_show", [
    ([], ["torch==2.13.0", "download.pytorch.org/whl/cpu", "systemctl enable inspector.service",
          "systemd-sysusers /etc/sysusers.d/inspector.conf", "/etc/systemd/system/inspector.service"]),
    (["--gpu", "--start"], ["tensorrt", "systemctl restart inspector.service"]),
    (["--uninstall"], ["systemctl disable --now inspector.service", "rm -rf /opt/inspector/venv"]),
])
def test_install_script_dry_run(args, must_show):
    if shutil.which("bash") is None:
        pytest.skip("bash not installed")
    r = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--dry-run", *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for text in must_show:
        assert text in r.stdout, f"{text!r} not in:\n{r.stdout}"
    if "--uninstall" in args:
        removals = [ln for ln in r.stdout.splitlines() if ln.startswith(("+ rm", "+ rmdir"))]
        for kept in ("/etc/inspector", "/var/lib/inspector", "/srv/inspector", "/var/log/inspector"):
            assert not any(kept in ln for ln in removals), f"{kept} must survive --uninstall: {removals}"
