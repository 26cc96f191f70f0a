"""Thin asyncio adapters over the sans-IO line protocols, shared by the tiers.

One read loop (:func:`read_lines`) for every newline-delimited stream, and one
JSON-RPC 2.0 client (:class:`JsonRpcClient`) used by the engine, the tests and
the benchmark. Library errors are translated here into :class:`ConnectionLost`
and :class:`RpcError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

from .compat import aio
from .protocol import jsonrpc
from .protocol.limits import MAX_RPC_FRAME
from .protocol.lines import NEED_DATA, LineDecoder, LineEvent, NeedData, Oversized

READ_CHUNK = 65536
DEFAULT_CALL_TIMEOUT = 10.0
# Where a reply's id sits in the first bytes of a frame (orjson keeps key order).
_REPLY_ID = re.compile(rb'^\{"jsonrpc":"2\.0","id":(-?\d+)')


class RpcClientError(Exception):
    """A JSON-RPC call did not produce a result."""


class ConnectionLost(RpcClientError):
    """The peer went away, or could not be reached."""


class CallTimeout(RpcClientError):
    """No answer within the call's timeout; the connection itself may be fine."""

    def __init__(self, method: str, timeout: float) -> None:
        super().__init__(f"{method} got no answer within {timeout:g} s")
        self.method, self.timeout = method, timeout


class FrameTooLarge(RpcClientError):
    """The answer was longer than the frame cap and was dropped unread."""


class RpcError(RpcClientError):
    """The server answered a call with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code
        self.message = message
        self.data = data


async def read_lines(
    reader: asyncio.StreamReader, decoder: LineDecoder | None = None
) -> AsyncIterator[bytes | LineEvent]:
    """Yield each line (bytes) or framing event until the stream ends."""
    decoder = decoder or LineDecoder()
    while True:
        event = decoder.next_event()
        if not isinstance(event, NeedData):
            yield event
            continue
        try:
            data = await reader.read(READ_CHUNK)
        except (ConnectionError, OSError):
            data = b""
        decoder.receive_data(data)
        if not data:
            while (tail := decoder.next_event()) is not NEED_DATA:
                yield tail
            return


async def close_writer(writer: asyncio.StreamWriter) -> None:
    """Close a stream, ignoring a peer that is already gone."""
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
        await writer.wait_closed()


NotificationHandler = Callable[[jsonrpc.Notification], None]


class JsonRpcClient:
    """A JSON-RPC 2.0 client over one TCP (or TLS) connection.

    ``async with await JsonRpcClient.connect(host, port) as c: await c.call(...)``.
    Notifications from the server go to ``on_notification``. When the
    connection drops, pending and later calls raise :class:`ConnectionLost`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_notification: NotificationHandler | None = None,
        max_frame: int = MAX_RPC_FRAME,
    ) -> None:
        self._reader, self._writer = reader, writer
        self._on_notification = on_notification
        self._ids = itertools.count(1)
        self._pending: dict[jsonrpc.RequestId, asyncio.Future[Any]] = {}
        self._closed = asyncio.Event()
        self.max_frame = max_frame
        self._task = asyncio.create_task(self._read_loop(), name="jsonrpc-client-reader")

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_notification: NotificationHandler | None = None,
        timeout: float = 5.0,
        server_hostname: str | None = None,
    ) -> JsonRpcClient:
        """Open a connection; :class:`ssl.SSLError` (a certificate that does not
        verify) is left to the caller, which must not treat it as a lost host."""
        try:
            async with aio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=ssl_context,
                    limit=READ_CHUNK,
                    server_hostname=server_hostname if ssl_context else None,
                )
        except ssl.SSLError:
            raise
        except TimeoutError as exc:
            raise ConnectionLost(f"cannot connect to {host}:{port}: timed out") from exc
        except OSError as exc:
            raise ConnectionLost(f"cannot connect to {host}:{port}: {exc}") from exc
        return cls(reader, writer, on_notification)

    @property
    def closed(self) -> asyncio.Event:
        return self._closed

    async def call(
        self, method: str, params: jsonrpc.Params = None, timeout: float = DEFAULT_CALL_TIMEOUT
    ) -> Any:
        """Send a request and wait for its result.

        Calls on one connection are independent: each waits for the reply with
        its own id, so a slow call does not hold back the ones after it.
        """
        if self._closed.is_set():
            raise ConnectionLost("connection is closed")
        rid = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        try:
            self._writer.write(jsonrpc.encode_frame(jsonrpc.Request(rid, method, params)))
            async with aio.timeout(timeout):
                await self._writer.drain()
                return await future
        except TimeoutError:
            raise CallTimeout(method, timeout) from None
        except (ConnectionError, OSError) as exc:
            raise ConnectionLost(str(exc) or type(exc).__name__) from exc
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        try:
            async for line in read_lines(self._reader, LineDecoder(self.max_frame)):
                if isinstance(line, bytes):
                    self._dispatch(line)
                elif isinstance(line, Oversized):
                    self._oversized(line)
        finally:
            self._closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ConnectionLost("connection lost"))

    def _dispatch(self, line: bytes) -> None:
        try:
            frame = jsonrpc.parse_frame(line)
        except jsonrpc.JsonRpcError:
            return
        if isinstance(frame, jsonrpc.Response):
            self._resolve(frame.id, frame.result, None)
        elif isinstance(frame, jsonrpc.ErrorResponse):
            self._resolve(frame.id, None, RpcError(frame.code, frame.message, frame.data))
        elif isinstance(frame, jsonrpc.Notification) and self._on_notification is not None:
            self._on_notification(frame)

    def _oversized(self, event: Oversized) -> None:
        """Fail the call the dropped frame answered; if its id is unreadable, every call."""
        error = f"a reply longer than {self.max_frame} bytes was dropped"
        found = _REPLY_ID.match(event.head)
        rids = [int(found.group(1))] if found else list(self._pending)
        for rid in rids:
            self._resolve(rid, None, FrameTooLarge(error))

    def _resolve(self, rid: Any, result: Any, error: Exception | None) -> None:
        future = self._pending.get(rid)
        if future is None or future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await close_writer(self._writer)

    async def __aenter__(self) -> JsonRpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
