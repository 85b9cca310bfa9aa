"""The ``sinks:`` section: one entry per output to the line (MQTT, webhook, Modbus TCP, OPC UA).

Validated with the rest of the config (unknown keys rejected); nothing here imports a protocol
library, so a config validates on any machine. Secrets (MQTT password, webhook HMAC key) are
written inline, or read from a file, an environment variable or a systemd credential
(``LoadCredential=``) when the daemon starts.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Optional, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

from inspector.errors import ConfigError
from inspector.metrics import parse_listen

VerdictName = Literal["pass", "fail", "error"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Strict):
    """Where a secret is read from at start: exactly one of a file (its content, one trailing
    newline dropped), an environment variable, or a systemd credential name (a file in
    ``$CREDENTIALS_DIRECTORY``, from ``LoadCredential=`` in a drop-in)."""

    file: Optional[Path] = None
    env: Optional[str] = Field(None, min_length=1)
    credential: Optional[str] = Field(None, min_length=1, pattern=r"^[A-Za-z0-9_.@-]+$")

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("file", "env", "credential") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a secret names exactly one of file, env or credential"
                             + (f" (got {', '.join(given)})" if given else ""))
        return self


Secret = Union[str, SecretRef]


def read_secret(secret: Optional[Secret], what: str) -> Optional[str]:
    """The secret's text, or None when none is configured. Raises ConfigError (one line) when it
    cannot be read; the message names where it looked, never the secret."""
    if secret is None or isinstance(secret, str):
        return secret
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if value is None:
            raise ConfigError(f"{what}: environment variable {secret.env} is not set")
        return value
    if secret.credential is not None:
        folder = os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(f"{what}: credential {secret.credential!r} needs $CREDENTIALS_DIRECTORY "
                              f"(LoadCredential={secret.credential}:PATH in the systemd unit)")
        path = Path(folder) / secret.credential
    else:
        path = Path(secret.file)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    return text[:-1] if text.endswith("\n") else text


class _SinkBase(_Strict):
    # names the sink in logs, status and metrics, and keys its delivery cursor in the database:
    # renaming a sink starts it afresh at the newest event
    name: str = Field("", max_length=64, pattern=r"^[A-Za-z0-9_.-]*$")
    sources: Optional[tuple[str, ...]] = None  # only these sources' events (default: all)
    verdicts: tuple[VerdictName, ...] = ("pass", "fail", "error")  # only these verdicts' events

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data):
        if isinstance(data, dict) and not data.get("name"):
            data = dict(data, name=data.get("type") or cls.model_fields["type"].default)
        return data


class TlsConfig(_Strict):
    ca_file: Optional[Path] = None  # None: the system's CA store
    cert_file: Optional[Path] = None  # client certificate (mutual TLS)
    key_file: Optional[Path] = None
    insecure: bool = False  # skip the host name check (a broker addressed by IP without it in its cert)


class MqttSinkConfig(_SinkBase):
    """Publishes ``<prefix>/<source>/verdict`` (one JSON per frame, QoS 1), ``<prefix>/available``
    (``online``, retained; ``offline`` as last will) and ``<prefix>/stats`` every stats_interval_s."""

    type: Literal["mqtt"] = "mqtt"
    host: str = Field(min_length=1)
    port: Optional[int] = Field(None, ge=1, le=65535)  # None: 1883, or 8883 with tls
    prefix: str = Field("inspector", min_length=1, pattern=r"^[^#+]+$")
    client_id: Optional[str] = Field(None, min_length=1, max_length=128)  # None: inspector-<host name>-<sink name>
    username: Optional[str] = None
    password: Optional[Secret] = None
    tls: Optional[TlsConfig] = None
    qos: Literal[1, 2] = 1  # at least once; 0 could lose events between broker and daemon
    retain: bool = False  # verdict messages (available is always retained)
    keepalive_s: int = Field(30, ge=5, le=3600)
    stats_interval_s: float = Field(60.0, ge=1.0, le=86400.0)
    timeout_s: float = Field(10.0, gt=0.0, le=600.0)  # connect, and wait for the broker's acknowledgement


class WebhookSinkConfig(_SinkBase):
    """HTTP POST of each event's JSON; 2xx is delivered, anything else is retried. With hmac_key,
    ``signature_header`` carries ``sha256=<hex HMAC-SHA256 of the body>``."""

    type: Literal["webhook"] = "webhook"
    url: str
    hmac_key: Optional[Secret] = None
    signature_header: str = Field("X-Inspector-Signature", pattern=r"^[A-Za-z0-9-]+$")
    headers: dict[str, str] = {}
    timeout_s: float = Field(5.0, gt=0.0, le=600.0)
    retries: int = Field(3, ge=0, le=100)  # quick retries of one POST before the sink backs off (and retries later)
    retry_backoff_s: float = Field(0.5, ge=0.0, le=60.0)  # doubled after each quick retry
    ca_file: Optional[Path] = None  # https: trust this CA instead of the system's

    @field_validator("url")
    @classmethod
    def _http_url(cls, v):
        u = urlsplit(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"{v[:80]!r} is not an http:// or https:// URL")
        return v


class _ServerBase(_SinkBase):
    # host:port; a missing host is loopback. Only a configured address or interface opens it wider.
    listen: str
    interface: Optional[str] = Field(None, min_length=1, max_length=15)  # bind to this interface's IPv4 address

    @field_validator("listen", mode="before")
    @classmethod
    def _host_port(cls, v):
        host, port = parse_listen(str(v))
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ModbusSinkConfig(_ServerBase):
    """A Modbus TCP server (read-only to clients): per source a block of holding registers and
    coils with the last verdict and its sequence number (README "Connecting to the line")."""

    type: Literal["modbus"] = "modbus"
    listen: str = "127.0.0.1:5020"  # 502 needs CAP_NET_BIND_SERVICE
    # first register (and coil) of each source's block; default: sources in config order at 0, 16, 32, ...
    blocks: dict[str, int] = {}

    @field_validator("blocks")
    @classmethod
    def _aligned(cls, v):
        for name, base in v.items():
            if base < 0 or base > 65536 - 16:
                raise ValueError(f"block of {name!r} at {base}: a register address from 0 to 65520")
        return v


class OpcUaSinkConfig(_ServerBase):
    """An OPC UA server with read-only nodes per source (last verdict, score, sequence, counts,
    bundle). security lists the endpoints offered; the Basic256Sha256 ones need certificate and
    private_key (PEM or DER)."""

    type: Literal["opcua"] = "opcua"
    listen: str = "127.0.0.1:4840"
    security: tuple[Literal["none", "basic256sha256_sign", "basic256sha256_sign_encrypt"], ...] = ("none",)
    certificate: Optional[Path] = None
    private_key: Optional[Path] = None
    # client certificates accepted on the secure endpoints (a folder of .der/.pem); None: any
    # certificate the client proves it holds the key of
    trusted_clients: Optional[Path] = None
    allow_anonymous: bool = True  # anonymous clients may read (no node is writable by anyone)
    namespace: str = "urn:inspector"

    @model_validator(mode="after")
    def _certificate_for_security(self):
        if not self.security:
            raise ValueError("security: give at least one of none, basic256sha256_sign, basic256sha256_sign_encrypt")
        if any(s != "none" for s in self.security) and (self.certificate is None or self.private_key is None):
            raise ValueError("the basic256sha256 endpoints need certificate and private_key (the server's own)")
        if not self.allow_anonymous and all(s == "none" for s in self.security):
            raise ValueError("allow_anonymous: false needs a basic256sha256 endpoint (clients prove a certificate "
                             "identity on a signed channel)")
        return self


SinkConfig = Annotated[
    Union[Annotated[MqttSinkConfig, Tag("mqtt")], Annotated[WebhookSinkConfig, Tag("webhook")],
          Annotated[ModbusSinkConfig, Tag("modbus")], Annotated[OpcUaSinkConfig, Tag("opcua")]],
    Discriminator(lambda v: v.get("type") if isinstance(v, dict) else getattr(v, "type", None)),
]
SINK_TAGS = frozenset({"mqtt", "webhook", "modbus", "opcua"})

_PATH_KEYS = frozenset({"file", "ca_file", "cert_file", "key_file", "certificate", "private_key", "trusted_clients"})


def resolve_sink_paths(sinks, fix) -> None:
    """Make the sinks' file paths (TLS files, secret files, certificates) relative to the config
    file, as every other path: ``fix(value)`` returns the resolved one."""

    def walk(d):
        if isinstance(d, dict):
            for k, v in d.items():
                if k in _PATH_KEYS and isinstance(v, str):
                    d[k] = fix(v)
                else:
                    walk(v)

    if isinstance(sinks, list):
        for s in sinks:
            walk(s)


def check_sinks(sinks, source_names: list[str]) -> None:
    """Cross-checks against the rest of the config; raises ValueError."""
    names = [s.name for s in sinks]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"sink names must be unique; repeated: {dup} (set name: on each)")
    for s in sinks:
        for src in (s.sources or ()) + tuple(getattr(s, "blocks", {}) or ()):
            if src not in source_names:
                raise ValueError(f"sink {s.name}: source {src!r} is not one of the configured sources {source_names}")
