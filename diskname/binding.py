"""A port that cannot be listened on is a configuration problem, said in one line.

Services check their fixed ports before they start anything (so a second
``diskname dev`` fails at once, not after starting PostgreSQL), and turn the
``OSError`` of the real bind into the same :class:`BindError`. The CLI adds the
flag that sets the port.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Iterator

from .config import ConfigError


class BindError(ConfigError):
    """``what`` cannot listen on ``host:port``; ``setting`` is the config field for the port."""

    def __init__(self, what: str, host: str, port: int, setting: str, reason: str) -> None:
        super().__init__(f"cannot listen for {what} on {host}:{port}: {reason}")
        self.what, self.host, self.port, self.setting = what, host, port, setting


def _reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the address ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return "the port is in use (is another diskname running?)"
    if exc.errno is not None:
        return os.strerror(exc.errno).lower()
    return str(exc)


def ensure_free(what: str, host: str, port: int, setting: str) -> None:
    """Raise :class:`BindError` if ``host:port`` cannot be bound now (port 0 always can)."""
    if port == 0:
        return
    with translated(what, host, port, setting):
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            # As asyncio's servers do, so a port in TIME_WAIT counts as free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)


@contextlib.contextmanager
def translated(what: str, host: str, port: int, setting: str) -> Iterator[None]:
    """Turn the ``OSError`` of a bind into a :class:`BindError`."""
    try:
        yield
    except OSError as exc:
        raise BindError(what, host, port, setting, _reason(exc)) from None
