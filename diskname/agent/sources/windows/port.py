"""A link to the host over a port read and written with blocking calls, one thread each.

On Windows the virtio-serial port is a file handle, not something an event
loop can watch: :class:`ThreadedLink` runs a reader thread that feeds what
the host sends into an ``asyncio.StreamReader`` and a writer thread that
drains a bounded queue. The port below it (:class:`BlockingPort`) is
:class:`.win32.Win32Port` in a guest, whose overlapped handle lets one
thread read while another writes; tests use a socket pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from typing import Protocol

log = logging.getLogger(__name__)

READ_CHUNK = 65536
# As for the Linux character device: the host not reading is a dead link.
MAX_PENDING = 1 << 20


class BlockingPort(Protocol):
    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes; ``b""`` when the port is closed or the host went away."""
        ...

    def write(self, data: bytes) -> int:
        """Write some of ``data``; how much. Raises OSError when the port is gone."""
        ...

    def cancel(self) -> None:
        """Make a read or write in progress in another thread return (idempotent)."""

    def close(self) -> None:
        """Release the port once no thread uses it."""


class ThreadedLink:
    """A :class:`~diskname.agent.transport.Link` over a :class:`BlockingPort`."""

    def __init__(self, port: BlockingPort, loop: asyncio.AbstractEventLoop) -> None:
        self.reader = asyncio.StreamReader()
        self._port, self._loop = port, loop
        self._queue: queue.Queue[bytes | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._read_loop, name="agent-port-read", daemon=True),
            threading.Thread(target=self._write_loop, name="agent-port-write", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        with self._lock:
            too_much = self._pending + len(data) > MAX_PENDING
            if not too_much:
                self._pending += len(data)
        if too_much:
            log.warning("the host does not read the channel; closing it")
            self.close()
            return
        self._queue.put(data)

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._port.cancel()
        self._queue.put(None)
        self.reader.feed_eof()

    async def wait_closed(self) -> None:
        await self._loop.run_in_executor(None, self._join)

    def _join(self) -> None:
        for thread in self._threads:
            thread.join()
        self._port.close()

    def _from_thread(self, data: bytes | None) -> None:
        # RuntimeError: the loop is closed, nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._arrived, data)

    def _arrived(self, data: bytes | None) -> None:
        if data is None:
            self.close()
        elif not self._closed:
            self.reader.feed_data(data)

    def _read_loop(self) -> None:
        while not self._closed:
            try:
                data = self._port.read(READ_CHUNK)
            except OSError as exc:
                log.debug("channel read failed: %s", exc)
                data = b""
            if not data:
                break
            self._from_thread(data)
        self._from_thread(None)

    def _write_loop(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                view = memoryview(data)
                while view:
                    view = view[self._port.write(bytes(view)) :]
            except OSError as exc:
                log.debug("channel write failed: %s", exc)
                self._from_thread(None)
                return
            with self._lock:
                self._pending -= len(data)
