"""OPC UA server sink (asyncua): nodes PLC and SCADA clients read or subscribe to.

Address space, in namespace ``namespace`` (default ``urn:inspector``), under Objects/Inspector:

- ``BundleId`` (String): the model bundle of the newest verdict (the daemon's at start).
- ``Sources/<source>/``: ``Sequence`` (UInt64, changes with every verdict: subscribe to it),
  ``EventId`` (String), ``Verdict`` (String pass/fail/error), ``Reject`` (Boolean, the verdict is
  fail), ``Score``, ``Threshold`` (Double), ``RegionCount`` (UInt32), ``CapturedAt`` (DateTime),
  ``PassCount``, ``FailCount``, ``ErrorCount`` (UInt64), ``LastEvent`` (String: the event JSON).
  ``Sequence`` is written last, so a client that sees it change reads the matching values.

Every node is read-only, for everyone: a write is answered BadNotWritable, and remote admin is
off, so nothing a client sends changes the daemon. ``security`` chooses the endpoints:
``none`` and/or Basic256Sha256 (Sign, SignAndEncrypt) with the server's ``certificate`` and
``private_key``; ``trusted_clients`` restricts the secure endpoints to the client certificates in
that folder; ``allow_anonymous: false`` asks every client for a certificate identity.
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Optional

from inspector.sinks.base import SinkError, require
from inspector.sinks.config import OpcUaSinkConfig
from inspector.sinks.listen import bind_address
from inspector.sinks.loop import LoopThread
from inspector.sinks.manager import SinkContext
from inspector.storage.outbox import Event

log = logging.getLogger("inspector.sinks.opcua")

START_TIMEOUT_S = 60.0  # asyncua builds its standard address space at start: seconds on a busy machine
WRITE_TIMEOUT_S = 10.0

# node name -> (ua.VariantType name, initial value)
_FIELDS = {"EventId": ("String", ""), "Verdict": ("String", ""), "Reject": ("Boolean", False),
           "Score": ("Double", 0.0), "Threshold": ("Double", 0.0), "RegionCount": ("UInt32", 0),
           "CapturedAt": ("DateTime", None), "PassCount": ("UInt64", 0), "FailCount": ("UInt64", 0),
           "ErrorCount": ("UInt64", 0), "LastEvent": ("String", ""), "Sequence": ("UInt64", 0)}
_POLICIES = {"none": "NoSecurity", "basic256sha256_sign": "Basic256Sha256_Sign",
             "basic256sha256_sign_encrypt": "Basic256Sha256_SignAndEncrypt"}


def _values(data: dict) -> dict:
    counts = data.get("counts") or {}
    captured = data.get("captured_at")
    return {"EventId": data["event_id"], "Verdict": data.get("verdict") or "", "Reject": data.get("verdict") == "fail",
            "Score": float(data["score"]) if data.get("score") is not None else float("nan"),
            "Threshold": float(data["threshold"]) if data.get("threshold") is not None else float("nan"),
            "RegionCount": len(data.get("regions") or ()),
            "CapturedAt": datetime.fromisoformat(captured.replace("Z", "+00:00")) if captured else None,
            "PassCount": int(counts.get("pass", 0)), "FailCount": int(counts.get("fail", 0)),
            "ErrorCount": int(counts.get("error", 0)), "Sequence": int(data["seq"])}


class OpcUaSink:
    kind = "opcua"

    def __init__(self, config: OpcUaSinkConfig, context: SinkContext):
        require("asyncua", f"{config.name} (opcua)")
        for what, path in (("certificate", config.certificate), ("private_key", config.private_key)):
            if path is not None and not path.is_file():
                from inspector.errors import ConfigError

                raise ConfigError(f"sink {config.name}: {what} {path} is not a file")
        self.config = config
        self.name = config.name
        self.context = context
        self._loop: Optional[LoopThread] = None
        self._server = None
        self._nodes: dict[str, dict[str, object]] = {}  # source -> field -> node id
        self._bundle = None
        self.endpoint: Optional[str] = None

    # ------------------------------------------------------------ on the server's loop
    async def _start(self, host: str, port: int) -> None:
        from asyncua import Server, ua

        logging.getLogger("asyncua").setLevel(logging.WARNING)  # its INFO is one line per request
        server = Server()
        await server.init()
        host_part = f"[{host}]" if ":" in host else host
        self.endpoint = f"opc.tcp://{host_part}:{port}/inspector/"
        server.set_endpoint(self.endpoint)
        server.set_server_name("inspector")
        server.allow_remote_admin(False)
        server.set_security_policy([getattr(ua.SecurityPolicyType, _POLICIES[s]) for s in self.config.security])
        secure = any(s != "none" for s in self.config.security)
        # a certificate identity can only be verified on a signed channel
        tokens = [ua.X509IdentityToken] if secure else []
        if self.config.allow_anonymous:
            tokens.insert(0, ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        if self.config.certificate is not None:
            await server.load_certificate(str(self.config.certificate))
            await server.load_private_key(str(self.config.private_key))
        if self.config.trusted_clients is not None:
            from asyncua.crypto.truststore import TrustStore
            from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions

            store = TrustStore([self.config.trusted_clients], [])
            await store.load()
            opts = CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.TRUSTED
            server.set_certificate_validator(CertificateValidator(opts, store))
        ns = await server.register_namespace(self.config.namespace)
        root = await server.nodes.objects.add_object(ns, "Inspector")
        self._bundle = await root.add_variable(ns, "BundleId", self.context.bundle_id or "", ua.VariantType.String)
        sources = await root.add_folder(ns, "Sources")
        for name in self.context.source_names:
            obj = await sources.add_object(ns, name)
            self._nodes[name] = {}
            for field, (vtype, initial) in _FIELDS.items():
                var = await obj.add_variable(ns, field, initial, getattr(ua.VariantType, vtype))
                self._nodes[name][field] = var.nodeid
        self._server = server
        await server.start()

    async def _write(self, events: list[Event]) -> None:
        from asyncua import ua

        latest: dict[str, Event] = {}
        for e in events:
            if e.source in self._nodes:
                latest[e.source] = e  # a client sees the newest; the sequence tells it how many went by
        for source, e in latest.items():
            values = _values(e.data)
            values["LastEvent"] = e.body
            nodes = self._nodes[source]
            for field, (vtype, _) in _FIELDS.items():  # Sequence is last in _FIELDS
                variant = ua.Variant(values[field], getattr(ua.VariantType, vtype))
                await self._server.write_attribute_value(nodes[field], ua.DataValue(variant))
        if latest:
            bundle = list(latest.values())[-1].data.get("bundle_id")
            if bundle:
                await self._server.write_attribute_value(
                    self._bundle.nodeid, ua.DataValue(ua.Variant(bundle, ua.VariantType.String)))

    # ------------------------------------------------------------ Sink
    def open(self) -> None:
        host, port = bind_address(self.config.listen, self.config.interface)
        self._loop = LoopThread(f"sink-{self.name}-server")
        try:
            self._loop.run(self._start(host, port), START_TIMEOUT_S)
        except Exception as exc:
            self.close()
            raise SinkError(f"cannot serve OPC UA on {host}:{port} ({type(exc).__name__}: {exc})") from None
        log.info("sink %s: OPC UA server at %s (security: %s; every node read-only)", self.name, self.endpoint,
                 ", ".join(self.config.security))

    def deliver(self, events: list[Event]) -> None:
        if self._loop is None:
            raise SinkError("the OPC UA server is not running")
        try:
            self._loop.run(self._write(events), WRITE_TIMEOUT_S)
        except Exception as exc:
            raise SinkError(f"cannot update the OPC UA nodes ({type(exc).__name__}: {exc})") from None

    def restore(self, latest: list[Event]) -> None:
        if latest:
            self.deliver(latest)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        loop, server = self._loop, self._server
        self._loop = self._server = None
        if loop is not None:
            loop.close(server.stop if server is not None else None, f"sink {self.name}")
