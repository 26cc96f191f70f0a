"""How the agent reaches the host: UNIX or TCP streams, reconnecting forever.

The host side may come and go (a host daemon restart, a migration), so
:func:`connect_forever` retries with capped back-off and never gives up.
virtio-serial character devices (``--channel``) are the next seam to fill.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class TransportUnavailable(Exception):
    """The configured transport cannot be used (bad address, not supported yet)."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """``unix:PATH`` or ``tcp:HOST:PORT``, parsed."""

    kind: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
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
    """The endpoint the agent uses: ``--connect`` first, then ``--channel``."""
    if connect:
        return parse_endpoint(connect)
    where = channel or "/dev/virtio-ports/ovirt-guest-agent.0"
    raise TransportUnavailable(
        f"virtio-serial channels ({where}) are not supported yet; use --connect unix:PATH"
    )


async def open_endpoint(endpoint: Endpoint) -> Stream:
    """Open one connection (raises OSError when the peer is not there)."""
    if endpoint.kind == "unix":
        return await asyncio.open_unix_connection(endpoint.path)
    return await asyncio.open_connection(endpoint.host, endpoint.port)


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


async def connect_forever(endpoint: Endpoint, backoff: Backoff) -> Stream:
    """Connect, retrying with back-off until it works (or we are cancelled)."""
    while True:
        try:
            stream = await open_endpoint(endpoint)
        except OSError as exc:
            delay = backoff.next()
            log.debug("cannot reach %s (%s); retrying in %.2fs", endpoint, exc, delay)
            await asyncio.sleep(delay)
            continue
        backoff.reset()
        return stream
