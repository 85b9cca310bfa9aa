"""MQTT sink (paho-mqtt): topics in the style of cameras-on-MQTT setups.

- ``<prefix>/available``: ``online`` (retained) once connected; ``offline`` when the daemon stops,
  and as the broker-sent last will when it dies or loses the connection.
- ``<prefix>/<source>/verdict``: one JSON event per frame (inspector/storage/outbox.py), QoS 1.
  A source name's ``/``, ``+`` and ``#`` become ``_`` in the topic.
- ``<prefix>/stats``: every ``stats_interval_s``, the daemon's status and the sinks' (QoS 0).

Delivered means the broker acknowledged (PUBACK; PUBCOMP at QoS 2). The session is clean and
paho does not reconnect by itself: the worker does, so a message is never half-owned by paho's
queue and the outbox at once.
"""
from __future__ import annotations

import json
import logging
import socket
import ssl
import threading
import time

from inspector.sinks.base import SinkError, require
from inspector.sinks.config import MqttSinkConfig, read_secret
from inspector.sinks.manager import SinkContext
from inspector.storage.outbox import Event

log = logging.getLogger("inspector.sinks.mqtt")


def topic_part(name: str) -> str:
    """A source name as one topic level (no separators or wildcards)."""
    return "".join("_" if c in "/+#\0" else c for c in name) or "_"


class MqttSink:
    kind = "mqtt"

    def __init__(self, config: MqttSinkConfig, context: SinkContext):
        self._mqtt = require("paho.mqtt.client", f"{config.name} (mqtt)")
        self.config = config
        self.name = config.name
        self.context = context
        self.password = read_secret(config.password, f"sink {config.name}: password")
        self.port = config.port or (8883 if config.tls else 1883)
        self.client_id = config.client_id or f"inspector-{socket.gethostname()}-{config.name}"[:64]
        self.prefix = config.prefix.rstrip("/")
        self._client = None
        self._connected = threading.Event()
        self._connect_result: str = ""
        self._last_stats = 0.0

    # ------------------------------------------------------------ paho callbacks (its network thread)
    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties=None) -> None:
        self._connect_result = str(reason_code)
        if not reason_code.is_failure:
            self._connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties=None) -> None:
        if self._connected.is_set():  # else keep the refusal's reason (e.g. "Not authorized")
            self._connect_result = f"disconnected ({reason_code})"
        self._connected.clear()

    # ------------------------------------------------------------ Sink
    def open(self) -> None:
        mqtt = self._mqtt
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311, reconnect_on_failure=False)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.max_inflight_messages_set(100)
        c.will_set(f"{self.prefix}/available", "offline", qos=1, retain=True)
        if self.config.username is not None:
            c.username_pw_set(self.config.username, self.password)
        tls = self.config.tls
        if tls is not None:
            c.tls_set(ca_certs=str(tls.ca_file) if tls.ca_file else None,
                      certfile=str(tls.cert_file) if tls.cert_file else None,
                      keyfile=str(tls.key_file) if tls.key_file else None, cert_reqs=ssl.CERT_REQUIRED)
            c.tls_insecure_set(tls.insecure)
        self._connected.clear()
        self._connect_result = "no answer"
        where = f"broker {self.config.host}:{self.port}"
        try:
            c.connect(self.config.host, self.port, keepalive=self.config.keepalive_s)
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"{where}: {exc.strerror if getattr(exc, 'strerror', None) else exc}") from None
        self._client = c
        c.loop_start()
        if not self._connected.wait(self.config.timeout_s):
            self.close()
            raise SinkError(f"{where} refused the connection: {self._connect_result}")
        self._publish_and_wait([(f"{self.prefix}/available", "online", True)])
        log.info("sink %s: connected to %s as %s", self.name, where, self.client_id)

    def deliver(self, events: list[Event]) -> None:
        self._publish_and_wait([(f"{self.prefix}/{topic_part(e.source)}/verdict", e.body, self.config.retain)
                                for e in events])

    def _publish_and_wait(self, messages: list[tuple[str, str, bool]]) -> None:
        c = self._client
        if c is None or not self._connected.is_set():
            raise SinkError(f"not connected to broker {self.config.host}:{self.port} ({self._connect_result})")
        infos = [c.publish(topic, body, qos=self.config.qos, retain=retain) for topic, body, retain in messages]
        deadline = time.monotonic() + self.config.timeout_s
        for info in infos:
            if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
                raise SinkError(f"publish refused by the client: {self._mqtt.error_string(info.rc)}")
            # wait in short steps so a dropped connection is noticed at once, not after timeout_s
            while not info.is_published():
                if not self._connected.is_set():
                    raise SinkError(f"connection to broker {self.config.host}:{self.port} lost before it "
                                    f"acknowledged ({self._connect_result})")
                if time.monotonic() > deadline:
                    raise SinkError(f"broker {self.config.host}:{self.port} did not acknowledge within "
                                    f"{self.config.timeout_s:g} s")
                info.wait_for_publish(0.05)

    def restore(self, latest: list[Event]) -> None:
        pass  # a client has no state to show again

    def tick(self) -> None:
        now = time.monotonic()
        if now - self._last_stats < self.config.stats_interval_s or self._client is None:
            return
        self._last_stats = now
        body = json.dumps(self.context.stats(), default=str)
        self._client.publish(f"{self.prefix}/stats", body, qos=0, retain=False)

    def close(self) -> None:
        c, self._client = self._client, None
        if c is None:
            return
        try:
            if self._connected.is_set():
                # a clean disconnect sends no last will: say offline ourselves
                c.publish(f"{self.prefix}/available", "offline", qos=1, retain=True).wait_for_publish(1.0)
            c.disconnect()
        except Exception:  # closing a broken connection: nothing left to save
            log.debug("sink %s: disconnect failed", self.name, exc_info=True)
        finally:
            c.loop_stop()
            self._connected.clear()
