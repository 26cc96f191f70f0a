"""JSON-RPC 2.0 server over asyncio streams, one JSON object per line.

Transport only: the methods come from :mod:`.api`. A bad client gets an error
reply for every bad frame and keeps its connection; a client that stops
reading loses its notifications (and then its connection), not our memory.

Requests on one connection are served concurrently (answers carry their ids and
go out as they are ready), up to ``MAX_IN_FLIGHT`` at a time: an unplug that
waits for the guest never holds back the polls behind it. A request the client
hung up on still runs to its end, so a plug is never half done.

Connections are guarded (:mod:`diskname.connguard`, SPEC §19): capped in all
and per peer address, closed when their first frame (TLS handshake included)
has not arrived within ``head_timeout``, or when nothing has come from the
client for ``idle_timeout`` (the engine polls every few seconds).

Optionally TLS (with client certificates required when a CA is given) and a
shared token: with a token set, a connection must first call
``Host.authenticate {"token": ...}``; until then every other call is answered
with ``UNAUTHORIZED`` and no notifications are sent to it. Failed TLS handshakes
and wrong tokens are logged (at most a line a minute, with a count) and counted
per address: past ``FREE_FAILURES`` the address is held back, a second doubling
to a minute, during which its connections are closed at once and its tokens not
even compared.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..connguard import LINE_END, FailureThrottle, GuardedServer, GuardLimits
from ..connguard.rules import IDLE_TIMEOUT
from ..protocol import jsonrpc
from ..protocol.host_wire import Code
from ..protocol.lines import MAX_LINE, LineDecoder, Oversized
from ..streams import read_lines
from .serving import Connections

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[Any]]
MAX_UNREAD = 4 * 1024 * 1024
MAX_IN_FLIGHT = 64
# Failed TLS handshakes and wrong tokens an address may make before it is held back
# (a second, doubling to a minute; connguard/failures.py).
FREE_FAILURES = 5
AUTHENTICATE = "Host.authenticate"


def server_ssl_context(
    cert: Path | None, key: Path | None, ca: Path | None
) -> ssl.SSLContext | None:
    """TLS for the JSON-RPC server, or None for plain TCP.

    ``ca`` set: a client must present a certificate that ``ca`` signed.
    """
    if cert is None and key is None and ca is None:
        return None
    if cert is None or key is None:
        raise ConfigError("TLS needs both tls_cert and tls_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca is not None:
        context.load_verify_locations(cafile=ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MethodError(Exception):
    """A method's failure, answered with ``code``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code, self.data = code, data


def _params(params: jsonrpc.Params) -> dict[str, Any]:
    if params is None or params == []:
        return {}
    if isinstance(params, dict):
        return params
    raise MethodError(jsonrpc.INVALID_PARAMS, "params must be an object")


class RpcServer:
    def __init__(
        self,
        methods: Mapping[str, Handler],
        *,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        limits: GuardLimits | None = None,
    ) -> None:
        self._methods = dict(methods)
        self._ssl = ssl_context
        self._token = token.encode() if token else None
        self._limits = limits or GuardLimits(idle_timeout=IDLE_TIMEOUT)
        self._server: GuardedServer | None = None
        self._connections = Connections()
        self._authenticated: set[asyncio.StreamWriter] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = GuardedServer(
            self._protocol,
            self._limits,
            head_end=LINE_END,
            ssl_context=self._ssl,
            name="JSON-RPC",
            failures=FailureThrottle(free=FREE_FAILURES),
        )
        self.port = await self._server.start(host, port)
        return self.port

    @property
    def guard(self) -> GuardedServer | None:
        """The listening side, with its counters (``stats``), once started."""
        return self._server

    def _protocol(self) -> asyncio.Protocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(), self._accepted)

    def notify(self, frame: jsonrpc.Notification) -> None:
        """Send a notification to every connected client."""
        line = jsonrpc.encode_frame(frame)
        for writer in self._connections.writers:
            if writer.is_closing() or not self._may_talk(writer):
                continue
            if writer.transport.get_write_buffer_size() > MAX_UNREAD:
                log.warning("dropping a JSON-RPC client that does not read")
                writer.close()
                continue
            writer.write(line)

    async def close(self, timeout: float = 2.0) -> None:
        """Stop accepting, close every connection, wait for their handlers and calls."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._connections.close(timeout)
        if self._calls:
            _, pending = await asyncio.wait(list(self._calls), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connections.serve(writer, self._client(reader, writer))

    def _may_talk(self, writer: asyncio.StreamWriter) -> bool:
        return self._token is None or writer in self._authenticated

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        try:
            async for event in read_lines(reader, LineDecoder(MAX_LINE)):
                reply = self._reply_at_once(event, writer)
                if isinstance(reply, jsonrpc.Request):
                    await slots.acquire()  # back-pressure: stop reading, not buffering
                    task = asyncio.create_task(self._serve_call(reply, writer, slots))
                    self._calls.add(task)
                    task.add_done_callback(self._calls.discard)
                elif reply is not None:
                    await _write(writer, reply)
        finally:
            self._authenticated.discard(writer)

    async def _serve_call(
        self, request: jsonrpc.Request, writer: asyncio.StreamWriter, slots: asyncio.Semaphore
    ) -> None:
        try:
            await _write(writer, await self._call(request))
        except (ConnectionError, OSError):
            pass  # the client is gone; the call itself has run to its end
        finally:
            slots.release()

    def _authenticate(
        self, request: jsonrpc.Request, writer: asyncio.StreamWriter
    ) -> jsonrpc.Frame:
        given = request.params.get("token") if isinstance(request.params, dict) else None
        if self._token is not None:
            address, guard = _peer(writer), self._server
            wait = 0.0 if guard is None else guard.held_back(address)
            if wait > 0:  # not even compared: guessing is slowed down
                message = f"too many failures from {address}: try again in {math.ceil(wait)} s"
                return jsonrpc.ErrorResponse(request.id, Code.UNAUTHORIZED, message)
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), self._token):
                if guard is not None:
                    guard.failed(address, "wrong token")
                return jsonrpc.ErrorResponse(request.id, Code.UNAUTHORIZED, "wrong token")
            self._authenticated.add(writer)
        return jsonrpc.Response(request.id, True)

    def _reply_at_once(
        self, event: object, writer: asyncio.StreamWriter
    ) -> jsonrpc.Frame | jsonrpc.Request | None:
        """The answer that needs no method call, or the request to call, or nothing."""
        if isinstance(event, Oversized):
            return jsonrpc.ErrorResponse(None, jsonrpc.INVALID_REQUEST, "request line too long")
        if not isinstance(event, bytes) or not event.strip():
            return None
        try:
            frame = jsonrpc.parse_frame(event)
        except jsonrpc.JsonRpcError as exc:
            return exc.to_response()
        if not isinstance(frame, jsonrpc.Request):
            return None
        if frame.method == AUTHENTICATE:
            return self._authenticate(frame, writer)
        if not self._may_talk(writer):
            return jsonrpc.ErrorResponse(
                frame.id, Code.UNAUTHORIZED, f"call {AUTHENTICATE} with the token first"
            )
        return frame  # notifications and responses from a client need no answer

    async def _call(self, request: jsonrpc.Request) -> jsonrpc.Frame:
        handler = self._methods.get(request.method)
        if handler is None:
            return jsonrpc.ErrorResponse(
                request.id, jsonrpc.METHOD_NOT_FOUND, f"no method {request.method!r}"
            )
        try:
            return jsonrpc.Response(request.id, await handler(_params(request.params)))
        except MethodError as exc:
            return jsonrpc.ErrorResponse(request.id, exc.code, str(exc), exc.data)
        except Exception:
            log.exception("JSON-RPC method %s failed", request.method)
            return jsonrpc.ErrorResponse(request.id, jsonrpc.INTERNAL_ERROR, "internal error")


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"


async def _write(writer: asyncio.StreamWriter, frame: jsonrpc.Frame) -> None:
    if writer.is_closing():
        return
    writer.write(jsonrpc.encode_frame(frame))
    await writer.drain()
