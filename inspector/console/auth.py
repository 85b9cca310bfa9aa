"""Who is asking, and may they write: password hashes (stdlib scrypt / PBKDF2), signed session
cookies, CSRF tokens.

- Local users: ``scrypt$n$r$p$salt$hash`` (``inspector serve --hash-password``) or
  ``pbkdf2_sha256$iterations$salt$hash``; compared in constant time.
- Sessions: a cookie ``user|expiry|hmac`` signed with the console's key (HttpOnly, SameSite=Strict).
- Reverse proxy: ``auth_header`` names the user, believed only from ``trusted_proxies``.
- CSRF: a token per user and session, an HMAC that a page of another site cannot read; review
  posts without it (or with another user's) are refused.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Optional

from inspector.errors import ConfigError

SESSION_COOKIE = "inspector_session"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1  # ~16 MiB and ~50 ms per check
_MAX_SCRYPT_N = 2 ** 20


def hash_password(password: str, *, salt: Optional[bytes] = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_hash_format(stored: str) -> None:
    """Raise ValueError when ``stored`` is not a hash this module can check (config validation)."""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            if not (2 <= n <= _MAX_SCRYPT_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
                raise ValueError
            bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
            return
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            if not 1000 <= int(parts[1]) <= 10_000_000:
                raise ValueError
            bytes.fromhex(parts[2]), bytes.fromhex(parts[3])
            return
    except ValueError:
        pass
    raise ValueError("password_hash must be made by `inspector serve --hash-password` "
                     "(scrypt$n$r$p$salt$hash or pbkdf2_sha256$iterations$salt$hash)")


def verify_password(password: str, stored: str) -> bool:
    try:
        check_hash_format(stored)
    except ValueError:
        return False
    parts = stored.split("$")
    pw = password.encode("utf-8")
    if parts[0] == "scrypt":
        n, r, p = (int(x) for x in parts[1:4])
        want = bytes.fromhex(parts[5])
        got = hashlib.scrypt(pw, salt=bytes.fromhex(parts[4]), n=n, r=r, p=p, dklen=len(want),
                             maxmem=256 * n * r + (1 << 20))
    else:
        want = bytes.fromhex(parts[3])
        got = hashlib.pbkdf2_hmac("sha256", pw, bytes.fromhex(parts[2]), int(parts[1]), dklen=len(want))
    return hmac.compare_digest(got, want)


def load_secret(path: Optional[Path]) -> bytes:
    """The signing key: the file's bytes (at least 32), or a random key for this process."""
    if path is None:
        return secrets.token_bytes(32)
    try:
        data = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ConfigError(f"console.secret_file {path}: cannot read it ({exc.strerror})") from None
    if len(data) < 32:
        raise ConfigError(f"console.secret_file {path}: needs at least 32 bytes (e.g. `head -c 48 /dev/urandom "
                          f"| base64 > {path}`)")
    return data


class LoginThrottle:
    """At most ``limit`` failed sign-ins per name and per client address within ``window_s``;
    beyond that, sign-ins from there are refused until the window has passed (password guessing
    against the console gets a handful of tries per quarter hour)."""

    def __init__(self, limit: int = 5, window_s: float = 900.0):
        self.limit, self.window_s = limit, window_s
        self._fails: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self._fails.get(key, ()) if now - t < self.window_s]
        if times:
            self._fails[key] = times
        else:
            self._fails.pop(key, None)
        return times

    def blocked(self, *keys: str, now: Optional[float] = None) -> bool:
        now = time.monotonic() if now is None else now
        return any(len(self._recent(k, now)) >= self.limit for k in keys)

    def failed(self, *keys: str, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._fails) > 10_000:  # bounded memory whatever is thrown at it
            self._fails.clear()
        for k in keys:
            self._fails.setdefault(k, []).append(now)


class Auth:
    """Logins and tokens for one console process."""

    def __init__(self, config, secret: bytes):
        self.config = config
        self._secret = secret
        self._users = {u.name: u.password_hash for u in config.users}
        # a hash to check against for unknown names, so they take as long as known ones
        self._dummy = hash_password("x", salt=b"\0" * 16)
        self.throttle = LoginThrottle()

    @property
    def enabled(self) -> bool:
        return self.config.login_configured

    def _sign(self, text: str) -> str:
        return hmac.new(self._secret, text.encode("utf-8"), hashlib.sha256).hexdigest()

    def check_login(self, name: str, password: str) -> bool:
        stored = self._users.get(name)
        ok = verify_password(password, stored if stored is not None else self._dummy)
        return ok and stored is not None

    def session_cookie(self, name: str, *, now: Optional[float] = None) -> str:
        expiry = int((now or time.time()) + self.config.session_hours * 3600)
        body = f"{name.encode('utf-8').hex()}|{expiry}"
        return f"{body}|{self._sign('session|' + body)}"

    def session_user(self, cookie: Optional[str], *, now: Optional[float] = None) -> Optional[str]:
        if not cookie or cookie.count("|") != 2:
            return None
        name_hex, expiry, sig = cookie.split("|")
        if not hmac.compare_digest(sig, self._sign(f"session|{name_hex}|{expiry}")):
            return None
        try:
            if int(expiry) < (now or time.time()):
                return None
            name = bytes.fromhex(name_hex).decode("utf-8")
        except ValueError:
            return None
        return name if name in self._users else None

    def user(self, headers, cookies, client_host: Optional[str]) -> Optional[str]:
        """The logged-in user of a request, or None (read-only)."""
        if not self.enabled:
            return None
        if self.config.auth_header and client_host in self.config.trusted_proxies:
            name = (headers.get(self.config.auth_header) or "").strip()
            if name:
                return name[:128]
        if self._users:
            return self.session_user(cookies.get(SESSION_COOKIE))
        return None

    def csrf_token(self, user: str, session: Optional[str]) -> str:
        return self._sign(f"csrf|{user}|{session or ''}")

    def csrf_ok(self, user: str, session: Optional[str], token: Optional[str]) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf_token(user, session))
