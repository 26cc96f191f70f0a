"""The host's JSON-RPC server with TLS, client certificates and a shared token.

Certificates are made at test time with the ``openssl`` command: a CA, a
server certificate for 127.0.0.1, a client certificate the CA signed and one
it did not.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from diskname.config import ConfigError
from diskname.host.service import HostConfig, HostService
from diskname.protocol import jsonrpc
from diskname.protocol.host_wire import Code
from diskname.streams import ConnectionLost, JsonRpcClient, RpcError, close_writer

from .conftest import running_host
from .tlsfiles import OPENSSL

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def tls_host(pki: Path, client_certs: bool = True) -> dict[str, Any]:
    return {
        "tls_cert": pki / "host.crt",
        "tls_key": pki / "host.key",
        "tls_ca": pki / "ca.crt" if client_certs else None,
    }


def client_context(pki: Path, cert: str | None) -> ssl.SSLContext:
    """What the engine would use: verify the host against the CA, present ``cert``."""
    context = ssl.create_default_context(cafile=pki / "ca.crt")
    if cert is not None:
        context.load_cert_chain(pki / f"{cert}.crt", pki / f"{cert}.key")
    return context


async def call_over_tls(host: HostService, context: ssl.SSLContext) -> Any:
    async with await JsonRpcClient.connect("127.0.0.1", host.port, ssl_context=context) as c:
        return await c.call("Host.ping", timeout=5)


async def test_tls_with_a_client_certificate_the_ca_signed(pki: Path, short_dir: Path) -> None:
    async with running_host(short_dir, qemu_ga=False, **tls_host(pki)) as host:
        assert await call_over_tls(host, client_context(pki, "engine")) is True


@pytest.mark.parametrize("cert", [None, "intruder"], ids=["no certificate", "another CA"])
async def test_tls_refuses_clients_without_a_good_certificate(
    pki: Path, short_dir: Path, cert: str | None
) -> None:
    async with running_host(short_dir, qemu_ga=False, **tls_host(pki)) as host:
        # TLS 1.3 finishes the client's handshake before the server has checked
        # the certificate: the refusal shows up as a lost connection or an alert.
        with pytest.raises((ConnectionLost, ssl.SSLError, ConnectionError)):
            await call_over_tls(host, client_context(pki, cert))
        assert await call_over_tls(host, client_context(pki, "engine")) is True


async def test_plain_tcp_to_a_tls_host_does_not_hurt_it(pki: Path, short_dir: Path) -> None:
    async with running_host(short_dir, qemu_ga=False, **tls_host(pki)) as host:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        writer.write(b'{"jsonrpc": "2.0", "id": 1, "method": "Host.ping"}\n')
        assert await asyncio.wait_for(reader.read(), 10) == b""  # refused, not served
        await close_writer(writer)
        assert await call_over_tls(host, client_context(pki, "engine")) is True


async def test_tls_without_client_certificates_when_no_ca_is_set(
    pki: Path, short_dir: Path
) -> None:
    async with running_host(short_dir, qemu_ga=False, **tls_host(pki, client_certs=False)) as host:
        assert await call_over_tls(host, client_context(pki, None)) is True


def test_tls_needs_a_certificate_and_its_key(pki: Path, short_dir: Path) -> None:
    config = HostConfig(state_dir=short_dir, channels_dir=short_dir, tls_cert=pki / "host.crt")
    with pytest.raises(ConfigError, match="tls_key"):
        HostService(config)


async def test_a_token_must_be_presented_before_anything_else(short_dir: Path) -> None:
    vm_id = str(uuid.uuid4())
    notes: list[jsonrpc.Notification] = []
    overheard: list[jsonrpc.Notification] = []
    async with (
        running_host(short_dir, qemu_ga=False, rpc_token="s3cret") as host,
        await JsonRpcClient.connect(
            "127.0.0.1", host.port, on_notification=overheard.append
        ) as stranger,
        await JsonRpcClient.connect("127.0.0.1", host.port, on_notification=notes.append) as c,
    ):
        for token in (None, "guess", 5):
            with pytest.raises(RpcError) as info:
                if token is None:
                    await stranger.call("VM.create", {"vmId": vm_id, "name": "x"})
                else:
                    await stranger.call("Host.authenticate", {"token": token})
            assert info.value.code == Code.UNAUTHORIZED
        assert await c.call("Host.authenticate", {"token": "s3cret"}) is True
        await c.call("VM.create", {"vmId": vm_id, "name": "x"})
        assert [n.params["vmId"] for n in notes if isinstance(n.params, dict)] == [vm_id]
        # The stranger got no notification and still gets errors, not a hang-up.
        with pytest.raises(RpcError):
            await stranger.call("Host.getAllVmStats")
        assert overheard == [] and not stranger.closed.is_set()


async def test_garbage_before_the_token_gets_errors_and_the_token_still_works(
    short_dir: Path,
) -> None:
    async with running_host(short_dir, qemu_ga=False, rpc_token="s3cret") as host:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        try:
            lines = [
                b"\xff\xfe not json\n",
                b'{"jsonrpc": "2.0", "id": 1, "method": "Host.authenticate", "params": [1]}\n',
                b'{"jsonrpc": "2.0", "id": 2, "method": "Host.authenticate", "params": {"token":'
                b' "s3cret"}}\n',
                b'{"jsonrpc": "2.0", "id": 3, "method": "Host.ping"}\n',
            ]
            replies = []
            for line in lines:
                writer.write(line)
                replies.append(orjson.loads(await asyncio.wait_for(reader.readline(), 5)))
            assert [r.get("error", {}).get("code") for r in replies] == [
                jsonrpc.PARSE_ERROR,
                Code.UNAUTHORIZED,
                None,
                None,
            ]
            assert replies[3] == {"jsonrpc": "2.0", "id": 3, "result": True}
        finally:
            await close_writer(writer)


async def test_without_a_token_authenticate_is_harmless(short_dir: Path) -> None:
    async with (
        running_host(short_dir, qemu_ga=False) as host,
        await JsonRpcClient.connect("127.0.0.1", host.port) as c,
    ):
        assert await c.call("Host.authenticate", {"token": "anything"}) is True
        assert await c.call("Host.ping") is True


async def test_tls_and_token_together(pki: Path, short_dir: Path) -> None:
    async with running_host(short_dir, qemu_ga=False, rpc_token="t0k", **tls_host(pki)) as host:
        context = client_context(pki, "engine")
        async with await JsonRpcClient.connect("127.0.0.1", host.port, ssl_context=context) as c:
            with pytest.raises(RpcError):
                await c.call("Host.ping")
            assert await c.call("Host.authenticate", {"token": "t0k"}) is True
            assert await c.call("Host.ping") is True
