"""Run a program in a booted guest through its qemu-ga (``guest-exec``) and read its output.

Only the tests use this: the guest gets a second qemu-ga port whose socket is
not in the host's channels folder, so the diskname host never sees it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from diskname.protocol import qga
from diskname.protocol.lines import NeedData

from ..conftest import wait_until

Call = Callable[[str, dict[str, Any]], Awaitable[Any]]


async def run_with(call: Call, path: str, *args: str, timeout: float) -> tuple[int, str, str]:
    """``guest-exec`` of ``path args`` through ``call`` (any qemu-ga command channel)."""
    started = await call("guest-exec", {"path": path, "arg": list(args), "capture-output": True})

    async def exited() -> dict[str, Any] | None:
        status = await call("guest-exec-status", {"pid": started["pid"]})
        return status if status.get("exited") else None

    status = await wait_until(exited, timeout=timeout, interval=0.2)
    out, err = (base64.b64decode(status.get(k, "")).decode() for k in ("out-data", "err-data"))
    return int(status.get("exitcode", -1)), out, err


class GuestExec:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._conn = qga.QgaConnection()

    @classmethod
    async def connect(cls, socket: Path, timeout: float = 240.0) -> GuestExec:
        """Connect and sync; waits (up to ``timeout``) for the guest's qemu-ga to start."""
        reader, writer = await asyncio.open_unix_connection(str(socket))
        client = cls(reader, writer)
        try:
            await client._sync(timeout)
        except BaseException:
            client.close()  # QEMU serves one client at a time: never leave one open
            raise
        return client

    async def _sync(self, timeout: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        sync_id = 1
        while True:
            sync_id += 1
            try:
                event = await self._exchange(self._conn.sync(sync_id), 2.0)
            except TimeoutError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                continue
            if isinstance(event, qga.Synced):
                return

    async def _exchange(self, data: bytes, timeout: float = 30.0) -> Any:
        self._writer.write(data)
        await self._writer.drain()
        async with asyncio.timeout(timeout):
            while isinstance(event := self._conn.next_event(), NeedData):
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise ConnectionResetError("qemu-ga closed the connection")
                self._conn.receive_data(chunk)
        return event

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        event = await self._exchange(qga.command(name, arguments))
        if not isinstance(event, qga.Return):
            raise AssertionError(f"{name} failed: {event}")
        return event.value

    async def run(self, path: str, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
        """Run ``path args`` in the guest; its exit code, stdout and stderr."""
        return await run_with(self.call, path, *args, timeout=timeout)

    def close(self) -> None:
        self._writer.close()
