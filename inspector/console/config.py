"""The ``console:`` section of the config file.

Read-only unless a login is configured: ``users`` (local accounts, hashed passwords made with
``inspector serve --hash-password``) and/or ``auth_header`` (a reverse proxy's authenticated user
header, honoured only from ``trusted_proxies``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inspector.metrics import normalised_listen, parse_listen

DEFAULT_LISTEN = "127.0.0.1:8321"


class ConsoleUser(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    # "scrypt$n$r$p$salt_hex$hash_hex" or "pbkdf2_sha256$iterations$salt_hex$hash_hex"
    password_hash: str = Field(min_length=10)

    @field_validator("password_hash")
    @classmethod
    def _known_scheme(cls, v):
        from inspector.console.auth import check_hash_format

        check_hash_format(v)
        return v


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # where to serve; `inspector run` starts the console only when this is set. A missing host
    # means 127.0.0.1: exposing it beyond the machine is an explicit choice (0.0.0.0:8321)
    listen: Optional[str] = None
    users: tuple[ConsoleUser, ...] = ()
    # e.g. "X-Remote-User": the user a reverse proxy authenticated; only from trusted_proxies
    auth_header: Optional[str] = Field(None, min_length=1, max_length=64)
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    # signs session cookies and CSRF tokens; without it a random key per start (logins end on restart)
    secret_file: Optional[Path] = None
    session_hours: float = Field(12.0, gt=0, le=24 * 30)
    # how often the live page's event stream looks for new verdicts
    poll_seconds: float = Field(1.0, ge=0.1, le=60.0)
    title: str = Field("Inspection console", max_length=80)
    # Host header names the console answers to ("*": any). Empty: loopback names when it listens on
    # loopback (a web page cannot reach it through a DNS name rebound to 127.0.0.1), else any
    allowed_hosts: tuple[str, ...] = ()

    @field_validator("listen", mode="before")
    @classmethod
    def _host_port(cls, v):
        return normalised_listen(v)

    def host_allowlist(self, listen: Optional[str]) -> Optional[frozenset[str]]:
        """The Host names to answer, lower case and without port; None: any."""
        import ipaddress

        if self.allowed_hosts:
            names = frozenset(h.strip().lower().strip("[]") for h in self.allowed_hosts)
            return None if "*" in names else names
        host, _ = parse_listen(listen or self.listen or DEFAULT_LISTEN)
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return frozenset({"127.0.0.1", "localhost", "::1", host.lower()})
        if self.auth_header is not None:
            # a page DNS-rebound to 127.0.0.1 on this machine would come as a trusted proxy and
            # name any user in the header: the names to answer must be stated
            from inspector.errors import ConfigError

            raise ConfigError(f"console: auth_header with listen {host} beyond loopback needs console.allowed_hosts "
                              "(the host names your reverse proxy forwards, or \"*\" to answer any)")
        return None

    @property
    def login_configured(self) -> bool:
        return bool(self.users) or self.auth_header is not None
