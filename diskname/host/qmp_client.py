"""A small asyncio QMP client over QEMU's UNIX socket (the sans-IO part: protocol.qmp).

``client = await QmpClient.connect(path)`` reads the greeting and negotiates
capabilities; ``await client.execute(name, args)`` returns the command's
``return`` value or raises :class:`QmpCommandError` with QEMU's own message.
Events go to whoever waits for them: take a :meth:`QmpClient.waiter` *before*
sending the command that causes the event, so it cannot be missed;
:meth:`QmpClient.listen` hears every event for the connection's life. When the
socket drops, pending and later calls raise :class:`QmpConnectionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..protocol import qmp
from ..protocol.errors import RemoteProtocolError
from ..protocol.lines import NeedData
from ..streams import close_writer

log = logging.getLogger(__name__)

READ_CHUNK = 65536
EventFilter = Callable[[qmp.Event], bool]
EventListener = Callable[[qmp.Event], None]


class QmpError(Exception):
    """Talking to QEMU failed."""


class QmpConnectionError(QmpError):
    """No QMP connection (cannot connect, lost, or QEMU broke the protocol)."""


class QmpCommandError(QmpError):
    """QEMU refused a command; ``desc`` is QEMU's own message."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(desc)
        self.command, self.error_class, self.desc = command, error_class, desc


class EventWaiter:
    """A future for the first event that matches; see :meth:`QmpClient.waiter`."""

    def __init__(self, client: QmpClient, match: EventFilter) -> None:
        self._client, self.match = client, match
        self.future: asyncio.Future[qmp.Event] = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float) -> qmp.Event:
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(self.future)
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._client._waiters.discard(self)
        if not self.future.done():
            self.future.cancel()


class QmpClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._decoder = qmp.QmpDecoder()
        self._ids = itertools.count(1)
        self._pending: dict[qmp.CommandId, asyncio.Future[qmp.Return | qmp.Error]] = {}
        self._waiters: set[EventWaiter] = set()
        self._listeners: list[EventListener] = []
        self._task: asyncio.Task[None] | None = None
        self.greeting: qmp.Greeting | None = None
        self.closed = asyncio.Event()

    @classmethod
    async def connect(cls, path: Path | str, timeout: float = 5.0) -> QmpClient:
        """Connect, read the greeting and leave capabilities negotiation mode."""
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(str(path), limit=READ_CHUNK)
        except (OSError, TimeoutError) as exc:
            raise QmpConnectionError(f"cannot connect to QMP at {path}: {exc}") from exc
        client = cls(reader, writer)
        try:
            async with asyncio.timeout(timeout):
                await client._handshake()
        except BaseException as exc:
            await client.close()
            if isinstance(exc, TimeoutError):
                raise QmpConnectionError(f"no QMP greeting from {path}") from exc
            raise
        return client

    async def _handshake(self) -> None:
        message = await self._read_message()
        if not isinstance(message, qmp.Greeting):
            raise QmpConnectionError(f"expected a QMP greeting, got {message!r}")
        self.greeting = message
        self._task = asyncio.create_task(self._read_loop(), name="qmp-reader")
        await self.execute(qmp.CAPABILITIES)

    async def _read_message(self) -> qmp.QmpMessage:
        while True:
            try:
                event = self._decoder.next_event()
            except RemoteProtocolError as exc:
                raise QmpConnectionError(f"QEMU broke the QMP protocol: {exc}") from exc
            if not isinstance(event, NeedData):
                return event
            try:
                data = await self._reader.read(READ_CHUNK)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                raise QmpConnectionError("QMP connection closed")
            self._decoder.receive_data(data)

    async def _read_loop(self) -> None:
        try:
            while True:
                self._dispatch(await self._read_message())
        except QmpConnectionError as exc:
            self._fail_all(exc)
        finally:
            self.closed.set()

    def _dispatch(self, message: qmp.QmpMessage) -> None:
        if isinstance(message, qmp.Event):
            for listener in self._listeners:
                try:
                    listener(message)
                except Exception:
                    log.exception("a QMP event listener failed")
            for waiter in list(self._waiters):
                if waiter.match(message) and not waiter.future.done():
                    waiter.future.set_result(message)
                    self._waiters.discard(waiter)
        elif isinstance(message, (qmp.Return, qmp.Error)) and message.id is not None:
            future = self._pending.pop(message.id, None)
            if future is not None and not future.done():
                future.set_result(message)

    def _fail_all(self, exc: QmpConnectionError) -> None:
        futures: list[asyncio.Future[Any]] = [*self._pending.values()]
        futures += [w.future for w in self._waiters]
        self._pending.clear()
        self._waiters.clear()
        for future in futures:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # nobody may be waiting: do not log it as lost

    def waiter(self, match: EventFilter) -> EventWaiter:
        """Start listening for an event; then cause it; then ``await waiter.wait(t)``."""
        if self.closed.is_set():
            raise QmpConnectionError("QMP connection is closed")
        waiter = EventWaiter(self, match)
        self._waiters.add(waiter)
        return waiter

    def listen(self, listener: EventListener) -> None:
        """Call ``listener(event)`` for every event from now on (it must not raise)."""
        self._listeners.append(listener)

    async def execute(
        self, name: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> Any:
        """Run one command; its ``return`` value, or :class:`QmpCommandError`."""
        if self.closed.is_set():
            raise QmpConnectionError("QMP connection is closed")
        cid = next(self._ids)
        future: asyncio.Future[qmp.Return | qmp.Error] = asyncio.get_running_loop().create_future()
        self._pending[cid] = future
        try:
            self._writer.write(qmp.encode_command(name, arguments, cid))
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                reply = await future
        except (ConnectionError, OSError) as exc:
            raise QmpConnectionError(f"QMP connection lost: {exc}") from exc
        except TimeoutError as exc:
            raise QmpConnectionError(f"QEMU did not answer {name} within {timeout}s") from exc
        finally:
            self._pending.pop(cid, None)
        if isinstance(reply, qmp.Error):
            raise QmpCommandError(name, reply.error_class, reply.desc)
        return reply.value

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.closed.set()
        self._fail_all(QmpConnectionError("QMP connection is closed"))
        await close_writer(self._writer)

    async def __aenter__(self) -> QmpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
