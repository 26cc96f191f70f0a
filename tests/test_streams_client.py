"""The JSON-RPC client over a real loopback socket: calls by id, timeouts, the frame cap."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pytest

from diskname.streams import CallTimeout, FrameTooLarge, JsonRpcClient, close_writer, read_lines

Answer = Callable[[dict[str, object], asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(answer: Answer) -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for line in read_lines(reader):
            if isinstance(line, bytes):
                asyncio.get_running_loop().create_task(answer(orjson.loads(line), writer))
        await close_writer(writer)

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


def reply(request: dict[str, object], result: object) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request["id"], "result": result}) + b"\n"


async def test_a_reply_over_the_frame_cap_fails_its_call_at_once_and_only_it() -> None:
    big_sent = asyncio.Event()

    async def answer(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        if request["method"] == "big":
            writer.write(reply(request, "x" * 5000))
            big_sent.set()
        else:
            await big_sent.wait()  # the small reply follows the oversized frame
            writer.write(reply(request, "small"))

    async with server(answer) as port:
        client = await JsonRpcClient.connect("127.0.0.1", port)
        client.max_frame = 1000
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            small = asyncio.create_task(client.call("small", timeout=10))
            with pytest.raises(FrameTooLarge):
                await client.call("big", timeout=10)
            assert loop.time() - start < 5  # at once, not after the call's timeout
            assert await small == "small"
        finally:
            await client.close()


async def test_a_slow_call_does_not_hold_back_the_next_and_a_timeout_is_its_own_error() -> None:
    async def answer(request: dict[str, object], writer: asyncio.StreamWriter) -> None:
        if request["method"] == "never":
            return
        writer.write(reply(request, request["method"]))

    async with server(answer) as port, await JsonRpcClient.connect("127.0.0.1", port) as client:
        hung = asyncio.create_task(client.call("never", timeout=0.3))
        assert await client.call("quick") == "quick"
        with pytest.raises(CallTimeout, match=r"never got no answer within 0\.3 s"):
            await hung
        assert not client.closed.is_set()
        assert await client.call("again") == "again"
