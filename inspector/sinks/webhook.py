"""Webhook sink: an HTTP POST of each event's JSON (stdlib http.client, one kept-alive connection).

Headers: ``Content-Type: application/json``, ``X-Inspector-Event-Id`` (the stable event id, for
de-duplication), ``X-Inspector-Sequence`` (``<source>:<seq>``) and, with ``hmac_key``,
``<signature_header>: sha256=<hex HMAC-SHA256 of the exact body bytes>`` (GitHub's scheme; check
it with a constant-time compare). A 2xx answer is delivered; anything else, a timeout or a
refused connection is retried ``retries`` times at once (backoff doubling from
``retry_backoff_s``), then the worker backs off and tries again later: the event stays first in
line until the receiver takes it.
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import logging
import ssl
import time
from typing import Optional
from urllib.parse import urlsplit

from inspector.sinks.base import SinkError
from inspector.sinks.config import WebhookSinkConfig, read_secret
from inspector.sinks.manager import SinkContext
from inspector.storage.outbox import Event

log = logging.getLogger("inspector.sinks.webhook")


def signature(key: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookSink:
    kind = "webhook"

    def __init__(self, config: WebhookSinkConfig, context: SinkContext):
        self.config = config
        self.name = config.name
        key = read_secret(config.hmac_key, f"sink {config.name}: hmac_key")
        self.key: Optional[bytes] = key.encode("utf-8") if key is not None else None
        u = urlsplit(config.url)
        self.https = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.https else 80)
        self.path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        self.where = f"{u.scheme}://{u.netloc}{u.path or '/'}"  # no query string: it may hold a token
        self._ssl = None
        if self.https:
            self._ssl = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        self._conn: Optional[http.client.HTTPConnection] = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.config.timeout_s,
                                                         context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.config.timeout_s)
        return self._conn

    def open(self) -> None:
        pass  # connects with the first POST: an unreachable receiver is a delivery failure like any other

    def deliver(self, events: list[Event]) -> None:
        for e in events:
            self._post(e)

    def _post(self, e: Event) -> None:
        body = e.body.encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "inspector-webhook",
                   "X-Inspector-Event-Id": e.event_id, "X-Inspector-Sequence": f"{e.source}:{e.seq}",
                   **self.config.headers}
        if self.key is not None:
            headers[self.config.signature_header] = signature(self.key, body)
        delay = self.config.retry_backoff_s
        problem = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                time.sleep(delay)
                delay *= 2
            try:
                conn = self._connection()
                conn.request("POST", self.path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read(65536)  # drain (bounded), so the connection can be kept alive
                if resp.will_close:
                    self.close()
                if 200 <= resp.status < 300:
                    return
                problem = f"answered HTTP {resp.status} {resp.reason}"
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                problem = f"{type(exc).__name__}: {exc}" if not getattr(exc, "strerror", None) else exc.strerror
        raise SinkError(f"POST {self.where}: {problem} (event {e.event_id}, {self.config.retries + 1} attempt(s))")

    def restore(self, latest: list[Event]) -> None:
        pass

    def tick(self) -> None:
        pass

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
