"""The accept loop of a guarded server, and the proxy that watches a protocol's head.

Rules and bookkeeping are :mod:`.rules`; this module only applies them to
sockets, transports and timers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import cast

from .failures import FailureThrottle
from .rules import EXHAUSTED, GuardLimits, HeadScanner, Ledger, Throttle, Verdict, connection_budget

log = logging.getLogger(__name__)

# Accepts per wake-up: other callbacks still run in a flood, and the descriptors of
# connections closed to make room (freed a loop turn or two later) stay within the reserve.
ACCEPT_BATCH = 32
EXHAUSTED_PAUSE = 1.0
ProtocolFactory = Callable[[], asyncio.Protocol]


class _Conn:
    """One accepted connection, from accept() until it is gone."""

    __slots__ = ("address", "last_heard", "opening", "sock", "started", "timer", "transport")

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address, self.sock = address, sock
        self.transport: asyncio.Transport | None = None
        self.opening: asyncio.Task[None] | None = None
        self.started = False
        self.timer: asyncio.TimerHandle | None = None
        self.last_heard = 0.0

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.transport is not None:
            self.transport.abort()
        elif self.started and self.opening is not None:
            self.opening.cancel()  # in the TLS handshake: asyncio closes the socket
        else:
            self.sock.close()  # not yet handed to asyncio
            if self.opening is not None:
                self.opening.cancel()


class _Watched(asyncio.Protocol):
    """The served protocol, as is, with the guard told of its head and its end."""

    def __init__(self, inner: asyncio.Protocol, conn: _Conn, server: GuardedServer) -> None:
        self._inner, self._conn, self._server = inner, conn, server
        self._scanner: HeadScanner | None = HeadScanner(server.head_end)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._conn.transport = cast(asyncio.Transport, transport)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._conn.last_heard = self._server.loop.time()
        if self._scanner is not None and self._scanner.feed(data):
            self._scanner = None
            self._server.heard(self._conn)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.forget(self._conn)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class GuardedServer(asyncio.AbstractServer):
    """A TCP (or TLS) server for ``factory``'s protocol behind :class:`GuardLimits`.

    ``await server.start(host, port)``; ``close()`` stops accepting and drops the
    connections still in their TLS handshake. Connections already handed to the
    protocol are the protocol's to end (aiohttp's runner, the RPC server).
    """

    def __init__(
        self,
        factory: ProtocolFactory,
        limits: GuardLimits,
        *,
        head_end: tuple[bytes, ...],
        ssl_context: ssl.SSLContext | None = None,
        name: str = "connections",
        failures: FailureThrottle | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        # Set: failed TLS handshakes (and what the protocol reports with failed())
        # hold an address back, and its new connections are closed at once.
        self.failures = failures
        self.head_end, self.name = head_end, name
        self.limits = limits
        self.stats: Counter[str] = Counter()
        self._factory, self._ssl = factory, ssl_context
        self._ledger: Ledger[_Conn] = Ledger(
            connection_budget(limits.max_connections), limits.max_per_address
        )
        self._listeners: list[socket.socket] = []
        self._paused: asyncio.TimerHandle | None = None
        self._opening: dict[asyncio.Task[None], _Conn] = {}
        self._throttle = Throttle()
        self._serving = False

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._listeners)

    @property
    def connections(self) -> int:
        return len(self._ledger)

    async def start(self, host: str | None, port: int, backlog: int = 1024) -> int:
        """Listen on every address ``host`` resolves to; the first socket's port."""
        infos = await self.loop.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                self._listeners.append(_listener(family, kind, proto, address, backlog))
        except OSError:
            self._close_listeners()
            raise
        self._say_budget()
        await self.start_serving()
        return int(self._listeners[0].getsockname()[1])

    async def start_serving(self) -> None:
        for listener in self._listeners:
            self.loop.add_reader(listener.fileno(), self._readable, listener)
        self._serving = True

    def is_serving(self) -> bool:
        return self._serving

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.loop

    async def serve_forever(self) -> None:
        await asyncio.Future()

    def close(self) -> None:
        self._close_listeners()
        for conn in list(self._opening.values()):
            self.forget(conn)
            conn.close()  # a socket not yet handed to asyncio is closed here

    async def wait_closed(self) -> None:
        if self._opening:
            await asyncio.wait(list(self._opening))

    def heard(self, conn: _Conn) -> None:
        """``conn`` completed its head: the head deadline gives way to the idle one."""
        self._ledger.heard(conn)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if self.limits.idle_timeout is not None:
            conn.timer = self.loop.call_later(self.limits.idle_timeout, self._idle, conn)

    def forget(self, conn: _Conn) -> None:
        self._ledger.discard(conn)
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None

    def _close_listeners(self) -> None:
        self._serving = False
        if self._paused is not None:
            self._paused.cancel()
        for listener in self._listeners:
            self.loop.remove_reader(listener.fileno())
            listener.close()
        self._listeners.clear()

    def _say_budget(self) -> None:
        budget, wanted = self._ledger.max_total, self.limits.max_connections
        if budget < wanted:
            log.warning(
                "%s: the file limit leaves room for %d connections, fewer than"
                " max_connections (%d): raise the limit (LimitNOFILE)",
                self.name, budget, wanted,
            )  # fmt: skip

    def _readable(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._accept_failed(listener, exc)
                return
            self._admit(sock, str(peer[0]))

    def _accept_failed(self, listener: socket.socket, exc: OSError) -> None:
        if exc.errno not in EXHAUSTED:
            self._say("accept", "%s: accept() failed: %s", self.name, exc)
            return  # ECONNABORTED and the like: the next wake-up goes on
        self.stats["exhausted"] += 1
        self._say(
            "exhausted", "%s: out of file descriptors (%s): closing connections that sent"
            " no request; raise the limit (LimitNOFILE)", self.name, exc.strerror,
        )  # fmt: skip
        victim = self._ledger.oldest_owing()
        if victim is not None:
            self._drop(victim, "evicted")  # its descriptor is free by the next wake-up
            return
        self.loop.remove_reader(listener.fileno())
        self._paused = self.loop.call_later(EXHAUSTED_PAUSE, self._resume, listener)

    def _resume(self, listener: socket.socket) -> None:
        self._paused = None
        if self._serving:
            self.loop.add_reader(listener.fileno(), self._readable, listener)

    def failed(self, address: str, what: str) -> None:
        """A client at ``address`` failed to prove who it is (``what``): logged, and
        with ``failures`` set counted against the address."""
        self.stats["failed_clients"] += 1
        if self.failures is not None:
            self.failures.failed(address, self.loop.time())
        self._say("failed", "%s: %s from %s", self.name, what, address)

    def held_back(self, address: str) -> float:
        """Seconds until ``address`` may try again after its failures (0.0: now)."""
        return 0.0 if self.failures is None else self.failures.wait(address, self.loop.time())

    def _admit(self, sock: socket.socket, address: str) -> None:
        if self.held_back(address) > 0:
            sock.close()
            self.stats["refused_failing"] += 1
            self._say(
                "failing", "%s: refusing connections from %s for %.0f s after its failures",
                self.name, address, self.held_back(address),
            )  # fmt: skip
            return
        verdict = self._ledger.verdict(address)
        if verdict == "full":
            victim = self._ledger.oldest_owing()
            if victim is not None:
                self._drop(victim, "evicted")
                verdict = "admit"
        if verdict != "admit":
            sock.close()
            self._refused(verdict, address)
            return
        conn = _Conn(address, sock)
        self._ledger.add(conn, address)
        conn.timer = self.loop.call_later(self.limits.head_timeout, self._late, conn)
        task = self.loop.create_task(self._open(conn))
        conn.opening = task
        self._opening[task] = conn
        task.add_done_callback(self._opened)

    def _opened(self, task: asyncio.Task[None]) -> None:
        self._opening.pop(task, None)

    async def _open(self, conn: _Conn) -> None:
        conn.started = True
        conn.sock.setblocking(False)
        handshake = self.limits.head_timeout if self._ssl is not None else None
        try:
            await self.loop.connect_accepted_socket(
                lambda: _Watched(self._factory(), conn, self),
                conn.sock,
                ssl=self._ssl,
                ssl_handshake_timeout=handshake,
            )
        except asyncio.CancelledError:
            pass  # an abandoned TLS handshake; asyncio closed the socket
        except OSError as exc:  # a failed TLS handshake; asyncio closed the socket
            if self._ssl is not None:
                self.failed(conn.address, f"TLS handshake failed ({_reason(exc)})")
        finally:
            if conn.transport is None:
                self.forget(conn)

    def _late(self, conn: _Conn) -> None:
        conn.timer = None
        self._drop(conn, "head_timeout")
        self._say(
            "head_timeout", "%s: closing connections that sent no request within %g s",
            self.name, self.limits.head_timeout,
        )  # fmt: skip

    def _idle(self, conn: _Conn) -> None:
        quiet_until = conn.last_heard + (self.limits.idle_timeout or 0.0)
        if self.loop.time() < quiet_until:
            conn.timer = self.loop.call_at(quiet_until, self._idle, conn)
            return
        conn.timer = None
        self._drop(conn, "idle_timeout")

    def _drop(self, conn: _Conn, why: str) -> None:
        self.stats[why] += 1
        self.forget(conn)
        conn.close()

    def _refused(self, verdict: Verdict, address: str) -> None:
        if verdict == "address-full":
            self.stats["refused_address"] += 1
            self._say(
                "address-full", "%s: refusing connections from %s, which holds %d"
                " (max_connections_per_address)", self.name, address, self._ledger.count(address),
            )  # fmt: skip
        else:
            self.stats["refused_full"] += 1
            self._say(
                "full", "%s: refusing connections: %d open, all past their request head",
                self.name, len(self._ledger),
            )  # fmt: skip

    def _say(self, kind: str, message: str, *args: object) -> None:
        held = self._throttle.allow(kind)
        if held is None:
            return
        more = f" ({held} more since the last such line)" if held else ""
        log.warning(message + more, *args)


def _reason(exc: OSError) -> str:
    """A failed handshake's reason, short (``CERTIFICATE_VERIFY_FAILED``...)."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or type(exc).__name__


def _listener(
    family: int, kind: int, proto: int, address: tuple[object, ...], backlog: int
) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
