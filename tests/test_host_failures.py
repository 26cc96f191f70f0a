"""The host logs and holds back clients that fail to prove who they are (SPEC §19).

A real ``RpcServer`` on loopback; loopback addresses 127.0.0.2 and up are
distinct clients. Wrong tokens and failed TLS handshakes are logged (no
traceback) and counted per address; past ``FREE_FAILURES`` that address's tokens
are not even compared and its new connections are closed at once, while other
addresses are served as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from diskname.host.rpc import FREE_FAILURES, RpcServer, server_ssl_context

from .tlsfiles import OPENSSL

pytestmark = pytest.mark.timeout(30)
TOKEN = "the-host-token"


async def ping(params: dict[str, Any]) -> bool:
    return True


@contextlib.asynccontextmanager
async def server(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[RpcServer]:
    rpc = RpcServer({"Host.ping": ping}, ssl_context=ssl_context, token=TOKEN)
    await rpc.start("127.0.0.1", 0)
    try:
        yield rpc
    finally:
        await rpc.close()


class Line:
    """One JSON-RPC connection from ``source``, a request and its answer at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.ids = reader, writer, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        frame = {"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params}
        self.writer.write(orjson.dumps(frame) + b"\n")
        answer: dict[str, Any] = orjson.loads(await asyncio.wait_for(self.reader.readline(), 5))
        return answer


@contextlib.asynccontextmanager
async def line(
    port: int, source: str, context: ssl.SSLContext | None = None
) -> AsyncIterator[Line]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, local_addr=(source, 0), ssl=context
    )
    try:
        yield Line(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def closed_at_once(port: int, source: str) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        return await asyncio.wait_for(reader.read(1), 5) == b""
    except ConnectionResetError:
        return True
    finally:
        writer.close()


async def test_wrong_tokens_are_logged_then_held_back_per_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with server() as rpc:
        with caplog.at_level(logging.INFO):
            async with line(rpc.port, "127.0.0.2") as guesser:
                for i in range(FREE_FAILURES):
                    answer = await guesser.call("Host.authenticate", token=f"guess{i}")
                    assert answer["error"]["message"] == "wrong token"
                answer = await guesser.call("Host.authenticate", token=TOKEN)  # not compared
                assert "too many failures from 127.0.0.2" in answer["error"]["message"]
            assert await closed_at_once(rpc.port, "127.0.0.2")
            async with line(rpc.port, "127.0.0.3") as engine:
                assert (await engine.call("Host.authenticate", token=TOKEN))["result"] is True
                assert (await engine.call("Host.ping"))["result"] is True
        messages = [r.getMessage() for r in caplog.records]
        assert "JSON-RPC: wrong token from 127.0.0.2" in messages
        assert any("refusing connections from 127.0.0.2" in m for m in messages)
        assert not [r for r in caplog.records if r.exc_info]
        assert rpc.guard is not None and rpc.guard.stats["failed_clients"] == FREE_FAILURES


@pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")
async def test_failed_tls_handshakes_are_logged_then_held_back_per_address(
    pki: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tls = server_ssl_context(pki / "host.crt", pki / "host.key", pki / "ca.crt")
    good = ssl.create_default_context(cafile=pki / "ca.crt")
    good.load_cert_chain(pki / "engine.crt", pki / "engine.key")
    anonymous = ssl.create_default_context(cafile=pki / "ca.crt")  # no client certificate
    async with server(tls) as rpc:
        assert rpc.guard is not None
        with caplog.at_level(logging.INFO):
            for _ in range(FREE_FAILURES):
                failed_before = rpc.guard.stats["failed_clients"]
                with contextlib.suppress(OSError, ValueError):  # EOF, or a reset
                    async with line(rpc.port, "127.0.0.4", anonymous) as intruder:
                        await intruder.call("Host.ping")  # TLS 1.3: refused on first read
                deadline = asyncio.get_running_loop().time() + 5
                while rpc.guard.stats["failed_clients"] == failed_before:
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.01)  # sync-ok: polling a counter with a deadline
            assert await closed_at_once(rpc.port, "127.0.0.4")
            async with line(rpc.port, "127.0.0.5", good) as engine:
                assert (await engine.call("Host.authenticate", token=TOKEN))["result"] is True
        messages = [r.getMessage() for r in caplog.records]
        assert any(
            m.startswith("JSON-RPC: TLS handshake failed (") and m.endswith("from 127.0.0.4")
            for m in messages
        ), messages
        assert not [r for r in caplog.records if r.exc_info]
