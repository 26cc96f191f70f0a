"""A TCP proxy in front of PostgreSQL, to cut the database away from an engine.

``cut()`` resets every connection and refuses new ones (the database is gone);
``blackhole()`` keeps every connection open and forwards nothing more (a network
that silently drops packets): the hard case, where nobody hears a reset.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit


class PgProxy:
    """127.0.0.1:port -> PostgreSQL's UNIX socket, with a switch to cut it."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()
        self.silent = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def blackhole(self) -> None:
        """Stop forwarding, silently: every connection stays open and goes quiet."""
        self.silent = True

    async def cut(self) -> None:
        """Refuse new connections and reset the open ones: the database is gone."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()

    async def close(self) -> None:
        if self._server is not None and self._server.is_serving():
            await self.cut()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.silent:
            self._writers.add(writer)  # accepted, and never answered
            return
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket_path)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            pipe = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                if self.silent:
                    continue  # swallowed: neither side hears of it
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            dst.transport.abort()


def proxied(dsn: str, port: int) -> tuple[str, str]:
    """(the UNIX socket behind ``dsn``, a DSN reaching the same database through port)."""
    parts = urlsplit(dsn)
    socket_dir = parse_qs(parts.query)["host"][0]
    return f"{socket_dir}/.s.PGSQL.5432", f"postgresql://postgres@127.0.0.1:{port}{parts.path}"
