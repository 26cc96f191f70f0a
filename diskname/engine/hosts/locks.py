"""One lock per VM, held only while someone holds or waits for it.

A monitor serialises its fetches' writes against the engine's own actions VM
by VM. A lock kept per VM for good would be two long-lived objects per VM that
every full garbage collection walks: at 100,000 VMs that walk was a pause of a
tenth of a second or more, in the middle of somebody's hot-plug.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holding or waiting


class VmLocks:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        """VMs whose lock is held or awaited."""
        return len(self._entries)

    @contextlib.asynccontextmanager
    async def hold(self, vm_id: str) -> AsyncIterator[None]:
        entry = self._entries.get(vm_id)
        if entry is None:
            entry = self._entries[vm_id] = _Entry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._entries[vm_id]
