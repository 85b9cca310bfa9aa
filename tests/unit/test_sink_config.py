"""The sinks: section: the README's examples validate, secrets come from file/env/credential,
paths are relative to the config, servers default to loopback, errors read well."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from inspector.errors import ConfigError
from inspector.settings import settings_from_dict
from inspector.sinks.config import SecretRef, read_secret

README = Path(__file__).resolve().parents[2] / "README.md"


def _settings(sinks, base=Path("/etc/inspector")):
    return settings_from_dict({"sources": [{"name": "cam1", "inbox": "/tmp"}, {"name": "cam2", "inbox": "/tmp"}],
                               "sinks": sinks}, base_dir=base)


def test_readme_examples_validate():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Connecting to the line"):text.index("## Architecture")]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    sinks = yaml.safe_load(blocks[0])["sinks"] + [item for b in blocks[1:] for item in yaml.safe_load(b)]
    s = _settings(sinks)
    assert [x.type for x in s.sinks] == ["mqtt", "webhook", "modbus", "opcua"]
    assert s.sinks[0].password == SecretRef(credential="mqtt-password")


def test_paths_are_relative_to_the_config_and_servers_default_to_loopback(tmp_path):
    s = _settings([{"type": "mqtt", "host": "h", "password": {"file": "pw"}, "tls": {"ca_file": "ca.pem"}},
                   {"type": "webhook", "url": "https://x/y", "hmac_key": {"file": "k"}},
                   {"type": "modbus"}, {"type": "opcua", "listen": "4841"}], base=tmp_path)
    mqtt, hook, modbus, opcua = s.sinks
    assert mqtt.password.file == tmp_path / "pw" and mqtt.tls.ca_file == tmp_path / "ca.pem"
    assert hook.hmac_key.file == tmp_path / "k"
    assert modbus.listen == "127.0.0.1:5020" and opcua.listen == "127.0.0.1:4841"


def test_secrets_from_file_env_and_systemd_credential(tmp_path, monkeypatch):
    (tmp_path / "pw").write_text("from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("from-credential")
    monkeypatch.setenv("INSPECTOR_TEST_SECRET", "from-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert read_secret("inline", "x") == "inline" and read_secret(None, "x") is None
    assert read_secret(SecretRef(file=tmp_path / "pw"), "x") == "from-file"
    assert read_secret(SecretRef(env="INSPECTOR_TEST_SECRET"), "x") == "from-env"
    assert read_secret(SecretRef(credential="mqtt-password"), "x") == "from-credential"
    with pytest.raises(ConfigError, match=r"^sink a: password: cannot read .*/nope \(No such file"):
        read_secret(SecretRef(file=tmp_path / "nope"), "sink a: password")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="LoadCredential=mqtt-password"):
        read_secret(SecretRef(credential="mqtt-password"), "sink a: password")


@pytest.mark.parametrize("sinks, message", [
    ([{"type": "mqtt", "host": "h", "password": {"file": "a", "env": "B"}}], "exactly one of file, env or credential"),
    ([{"type": "mqtt", "host": "h", "qos": 0}], "sinks.0.qos"),
    ([{"type": "mqtt", "host": "h", "prefix": "a/#"}], "sinks.0.prefix"),
    ([{"type": "webhook", "url": "http://x", "sources": ["cam9"]}], "source 'cam9' is not one of"),
    ([{"type": "modbus", "blocks": {"cam1": 70000}}], "a register address from 0 to 65520"),
    ([{"type": "modbus", "listen": "host:notaport"}], "the port must be a number"),
    ([{"type": "opcua", "allow_anonymous": False}], "allow_anonymous: false needs a basic256sha256 endpoint"),
    ([{"type": "webhook", "url": "http://x"}, {"type": "webhook", "url": "http://y"}], "sink names must be unique"),
])
def test_bad_sink_configs_say_what_is_wrong(sinks, message):
    with pytest.raises(ConfigError) as err:
        _settings(sinks)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_interface_names_its_address():
    from inspector.sinks.base import SinkError
    from inspector.sinks.listen import bind_address

    assert bind_address("0.0.0.0:4840", "lo") == ("127.0.0.1", 4840)
    with pytest.raises(SinkError, match="interface 'nosuch0' has no IPv4 address"):
        bind_address("4840", "nosuch0")
