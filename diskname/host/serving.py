"""Book-keeping for the connection handlers of an asyncio stream server.

Each server in the host (JSON-RPC, agent channels, sim hardware ports) needs
the same shutdown: close every connection, give the handlers a moment to
finish, cancel what is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from ..streams import close_writer

Session = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def dial_forever(path: Path, session: Session, initial: float, cap: float) -> None:
    """Connect to the UNIX socket QEMU serves at ``path``, run ``session``, repeat.

    The socket comes and goes with the VM: retry with back-off from
    ``initial`` doubling up to ``cap`` seconds; reset after each connection.
    """
    delay = initial
    while True:
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
        except OSError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, cap)
            continue
        delay = initial
        try:
            await session(reader, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            await close_writer(writer)
        await asyncio.sleep(delay)


class Connections:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def writers(self) -> list[asyncio.StreamWriter]:
        return list(self._writers)

    async def serve(self, writer: asyncio.StreamWriter, body: Awaitable[None]) -> None:
        """Run one connection's handler ``body``, then close the connection."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await body
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels a handler. Ending normally matters: on 3.11
            # start_server's done-callback logs a cancelled handler as an error.
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            await close_writer(writer)

    async def close(self, timeout: float = 2.0) -> None:
        """Close every connection; cancel handlers still running after ``timeout``."""
        for writer in self._writers:
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
