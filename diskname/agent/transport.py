"""How the agent reaches the host: a virtio-serial port, or a UNIX/TCP stream.

Either way the agent gets a :class:`Link`: a ``StreamReader`` of what the host
sends, ``write()`` for what goes back, ``close()``. The host side may come and
go (a host daemon restart, a migration), so :func:`connect_forever` retries
with capped back-off and never gives up.

A virtio-serial port is a character device that always opens, host there or
not. With the host away, a read returns 0 (end of file) and writes fail with
``EAGAIN``; :class:`CharDeviceLink` turns both into the link ending, and the
caller's back-off keeps the retries slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sys
from dataclasses import dataclass
from typing import Protocol

from ..compat import SLOTS

log = logging.getLogger(__name__)

# The oVirt guest agent ports (SPEC §3), current first.
DEFAULT_PORTS = (
    "/dev/virtio-ports/ovirt-guest-agent.0",
    "/dev/virtio-ports/com.redhat.rhevm.vdsm",
)
# The same ports in a Windows guest (SPEC §20).
WINDOWS_PORTS = (
    "\\\\.\\Global\\ovirt-guest-agent.0",
    "\\\\.\\Global\\com.redhat.rhevm.vdsm",
)
READ_CHUNK = 65536
# Bytes the host has not taken yet; beyond this it is not reading and the link
# is dropped (a heartbeat every 5 s would otherwise pile up forever).
MAX_PENDING = 1 << 20


class TransportUnavailable(Exception):
    """The configured transport cannot be used (bad address)."""


@dataclass(frozen=True, **SLOTS)
class Endpoint:
    """``unix:PATH``, ``tcp:HOST:PORT``, or character devices tried in order."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0
    paths: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.kind == "chardev":
            return " or ".join(self.paths)
        return f"unix:{self.path}" if self.kind == "unix" else f"tcp:{self.host}:{self.port}"


def parse_endpoint(spec: str) -> Endpoint:
    """Parse ``unix:PATH`` or ``tcp:HOST:PORT`` (``tcp:[::1]:PORT`` for IPv6)."""
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return Endpoint(kind="unix", path=rest)
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host and port.isdigit():
            return Endpoint(kind="tcp", host=host.strip("[]"), port=int(port))
    raise TransportUnavailable(f"expected unix:PATH or tcp:HOST:PORT, got {spec!r}")


def resolve_endpoint(connect: str | None, channel: str | None) -> Endpoint:
    """``--connect`` first, then ``--channel``, then the default virtio-serial ports."""
    if connect:
        return parse_endpoint(connect)
    ports = WINDOWS_PORTS if sys.platform == "win32" else DEFAULT_PORTS
    return Endpoint(kind="chardev", paths=(channel,) if channel else ports)


class Link(Protocol):
    """One connection to the host."""

    reader: asyncio.StreamReader

    def write(self, data: bytes) -> None:
        """Queue bytes for the host; a failure ends the link (the reader sees EOF)."""

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class StreamLink:
    """A UNIX or TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self._writer = reader, writer

    def write(self, data: bytes) -> None:
        if self._writer.is_closing():
            return
        if self._writer.transport.get_write_buffer_size() > MAX_PENDING:
            log.warning("the host does not read; dropping the connection")
            self._writer.close()
            return
        try:
            self._writer.write(data)
        except (ConnectionError, OSError):
            self._writer.close()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    def close(self) -> None:
        self._writer.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await self._writer.wait_closed()


class CharDeviceLink:
    """A character device (a virtio-serial port; a PTY in tests) driven by the event loop."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.reader = asyncio.StreamReader()
        self._fd, self._loop = fd, loop
        self._pending = bytearray()
        self._closed = False
        loop.add_reader(fd, self._readable)

    @classmethod
    def open(cls, path: str) -> CharDeviceLink:
        """Open ``path`` non-blocking; raises OSError when it is not there."""
        if sys.platform == "win32":  # Windows has Win32Port (sources/windows)
            raise OSError(errno.ENODEV, "no character devices on Windows", path)
        import termios  # Linux only: imported here so the agent imports on Windows
        import tty

        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            if os.isatty(fd):
                # A serial console as channel: bytes as they are, no echo.
                tty.setraw(fd, termios.TCSANOW)
            return cls(fd, asyncio.get_running_loop())
        except BaseException:
            os.close(fd)
            raise

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # EIO: a PTY whose other end closed; anything else: the port is gone.
            log.debug("channel read failed: %s", exc)
            data = b""
        if data:
            self.reader.feed_data(data)
        else:
            self.close()

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if len(self._pending) + len(data) > MAX_PENDING:
            log.warning("the host does not read the channel; closing it")
            self.close()
            return
        was_idle = not self._pending
        self._pending += data
        if was_idle:
            self._flush()

    def _flush(self) -> None:
        try:
            sent = os.write(self._fd, self._pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                log.debug("channel write failed: %s", exc)
                self.close()
                return
            sent = 0
        del self._pending[:sent]
        if self._pending:
            self._loop.add_writer(self._fd, self._flush)
        else:
            self._loop.remove_writer(self._fd)

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        os.close(self._fd)
        self._pending.clear()
        self.reader.feed_eof()

    async def wait_closed(self) -> None:
        return None


async def open_endpoint(endpoint: Endpoint) -> Link:
    """Open one link (raises OSError when the peer or the port is not there)."""
    if endpoint.kind == "chardev":
        return _open_first(endpoint.paths)
    if endpoint.kind == "unix":
        if sys.platform == "win32":
            raise TransportUnavailable("no unix: sockets for asyncio on Windows; use tcp:")
        return StreamLink(*await asyncio.open_unix_connection(endpoint.path))
    return StreamLink(*await asyncio.open_connection(endpoint.host, endpoint.port))


def _open_port(path: str) -> Link:
    if sys.platform == "win32":
        from .sources.windows.port import ThreadedLink
        from .sources.windows.win32 import Win32Port

        return ThreadedLink(Win32Port.open(path), asyncio.get_running_loop())
    return CharDeviceLink.open(path)


def _open_first(paths: tuple[str, ...]) -> Link:
    failure: OSError | None = None
    for path in paths:
        try:
            return _open_port(path)
        except OSError as exc:
            failure = failure or exc
    raise failure or FileNotFoundError(errno.ENOENT, "no channel path given")


class Backoff:
    """Delays that start small and double up to a cap."""

    def __init__(self, initial: float = 0.05, cap: float = 2.0) -> None:
        self.initial, self.cap = initial, cap
        self._next = initial

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self.cap)
        return delay

    def reset(self) -> None:
        self._next = self.initial


async def connect_forever(endpoint: Endpoint, backoff: Backoff) -> Link:
    """Open a link, retrying with back-off until it works (or we are cancelled).

    The back-off is not reset here: a character device opens even with nobody
    on the other side, so only the caller knows whether a link was good.
    """
    while True:
        try:
            return await open_endpoint(endpoint)
        except OSError as exc:
            delay = backoff.next()
            log.debug("cannot reach %s (%s); retrying in %.2fs", endpoint, exc, delay)
            await asyncio.sleep(delay)
