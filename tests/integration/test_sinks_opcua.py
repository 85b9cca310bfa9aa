"""The OPC UA sink served by the daemon's side, read by a real asyncua client: nodes per source, a
subscription, writes refused for everyone, Basic256Sha256 with certificates, trusted clients."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from tests.sink_fixtures import free_port, record_verdict, sink_manager

pytest.importorskip("asyncua", reason="asyncua missing: pip install 'inspector[line]'")


def _manager(tmp_path, sink: dict):
    return sink_manager(tmp_path, sink, bundle_id="bundle-a")


def _record(store, i, source="cam1", kind="fail", score=0.75):
    return record_verdict(store, i, source, kind, score, regions=((1, 2, 3, 4, 12, 0.9),) if kind == "fail" else ())


def _wait_serving(mgr, timeout=60):
    deadline = time.monotonic() + timeout
    while mgr.status()["opcua"]["state"] not in ("connected", "delivering"):
        assert time.monotonic() < deadline, mgr.status()
        time.sleep(0.1)


async def _node(client, *path):
    ns = await client.get_namespace_index("urn:inspector")
    return await client.nodes.objects.get_child([f"{ns}:Inspector"] + [f"{ns}:{p}" for p in path])


async def _wait_value(node, want, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await node.read_value() == want:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{node} never became {want!r} (is {await node.read_value()!r})")


def test_nodes_subscription_and_no_writes(tmp_path):
    from asyncua import Client, ua

    port = free_port()
    store, mgr = _manager(tmp_path, {"type": "opcua", "listen": f"{port}"})
    mgr.start()
    _wait_serving(mgr)

    async def scenario():
        changes = []

        class Handler:
            def datachange_notification(self, node, val, data):
                changes.append(val)

        async with Client(f"opc.tcp://127.0.0.1:{port}/inspector/") as client:
            seq = await _node(client, "Sources", "cam1", "Sequence")
            sub = await client.create_subscription(20, Handler())
            await sub.subscribe_data_change(seq)
            assert await (await _node(client, "BundleId")).read_value() == "bundle-a"
            await asyncio.to_thread(_record, store, 1, kind="pass", score=0.25)
            await asyncio.to_thread(_record, store, 2, kind="fail")
            await _wait_value(seq, 2)
            values = {name: await (await _node(client, "Sources", "cam1", name)).read_value()
                      for name in ("Verdict", "Reject", "Score", "Threshold", "RegionCount", "PassCount", "FailCount",
                                   "ErrorCount", "EventId", "LastEvent", "CapturedAt")}
            assert values["Verdict"] == "fail" and values["Reject"] is True and values["Score"] == 0.75
            assert values["Threshold"] == 0.5 and values["RegionCount"] == 1
            assert (values["PassCount"], values["FailCount"], values["ErrorCount"]) == (1, 1, 0)
            event = json.loads(values["LastEvent"])
            assert event["event_id"] == values["EventId"] and event["seq"] == 2
            assert await (await _node(client, "Sources", "cam2", "Sequence")).read_value() == 0
            deadline = time.monotonic() + 5
            while 2 not in changes and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert 2 in changes  # subscribers are told
            # nothing a client writes is taken: not a result node, not the bundle id
            for node, value, vtype in ((seq, 99, ua.VariantType.UInt64),
                                       (await _node(client, "BundleId"), "evil", ua.VariantType.String)):
                with pytest.raises(ua.UaStatusCodeError) as err:
                    await node.write_value(ua.DataValue(ua.Variant(value, vtype)))
                assert type(err.value).__name__ in ("BadNotWritable", "BadUserAccessDenied")
            assert await seq.read_value() == 2

    try:
        asyncio.run(scenario())
    finally:
        mgr.stop()
        store.close()


def _certs(folder, name, uri, use):
    from asyncua.crypto.cert_gen import setup_self_signed_certificate

    key, cert = folder / f"{name}-key.pem", folder / f"{name}-cert.der"
    asyncio.run(setup_self_signed_certificate(key, cert, uri, "localhost", [use], {"commonName": name}))
    return key, cert


def test_basic256sha256_with_certificates_and_trusted_clients(tmp_path):
    from asyncua import Client, ua
    from cryptography.x509.oid import ExtendedKeyUsageOID

    skey, scert = _certs(tmp_path, "server", "urn:inspector:server", ExtendedKeyUsageOID.SERVER_AUTH)
    ckey, ccert = _certs(tmp_path, "client", "urn:test:client", ExtendedKeyUsageOID.CLIENT_AUTH)
    okey, ocert = _certs(tmp_path, "other", "urn:test:other", ExtendedKeyUsageOID.CLIENT_AUTH)
    trusted = tmp_path / "trusted"
    trusted.mkdir()
    (trusted / "client.der").write_bytes(ccert.read_bytes())
    port = free_port()
    store, mgr = _manager(tmp_path, {"type": "opcua", "listen": f"127.0.0.1:{port}",
                                     "security": ["basic256sha256_sign_encrypt"], "certificate": str(scert),
                                     "private_key": str(skey), "trusted_clients": str(trusted)})
    mgr.start()
    _wait_serving(mgr)
    url = f"opc.tcp://127.0.0.1:{port}/inspector/"

    async def secure_client(key, cert, uri):
        c = Client(url)
        c.application_uri = uri
        await c.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
        return c

    async def scenario():
        await asyncio.to_thread(_record, store, 1)
        client = await secure_client(ckey, ccert, "urn:test:client")
        async with client:
            seq = await _node(client, "Sources", "cam1", "Sequence")
            await _wait_value(seq, 1)
            with pytest.raises(ua.UaStatusCodeError):
                await seq.write_value(ua.DataValue(ua.Variant(5, ua.VariantType.UInt64)))
        with pytest.raises(Exception) as plain_err:  # no unencrypted endpoint is offered
            async with Client(url, timeout=5) as plain:
                await (await _node(plain, "Sources", "cam1", "Sequence")).read_value()
        with pytest.raises(Exception) as untrusted:  # a certificate not in trusted_clients is refused
            async with await secure_client(okey, ocert, "urn:test:other") as other:
                await (await _node(other, "Sources", "cam1", "Sequence")).read_value()
        assert "No matching endpoints" in str(plain_err.value)
        assert type(untrusted.value).__name__ == "BadCertificateUntrusted"

    try:
        asyncio.run(scenario())
    finally:
        mgr.stop()
        store.close()


def test_security_without_certificate_is_a_config_error(tmp_path):
    from inspector.errors import ConfigError

    with pytest.raises(ConfigError, match="need certificate and private_key"):
        _manager(tmp_path, {"type": "opcua", "security": ["none", "basic256sha256_sign"]})
