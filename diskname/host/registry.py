"""The host's VMs by id, their persistence, and hash-change listeners.

Every mutation goes through here, so a hash change always reaches the
listeners (the JSON-RPC server's ``VM_status`` broadcast) and always gets
written under ``--state-dir``. Writes are atomic (tmp + fsync + rename) and
run in a thread; a burst of mapping changes is written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson

from .vm import Vm

log = logging.getLogger(__name__)

HashListener = Callable[[Vm], None]


class UnknownVm(KeyError):
    """No VM with that id on this host."""


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Registry:
    def __init__(self, state_dir: Path) -> None:
        self._dir = state_dir / "vms"
        self._vms: dict[str, Vm] = {}
        self._notified: dict[str, str] = {}
        self._listeners: list[HashListener] = []
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._flush_lock = asyncio.Lock()

    def __iter__(self) -> Iterator[Vm]:
        return iter(list(self._vms.values()))

    def __len__(self) -> int:
        return len(self._vms)

    def add_listener(self, listener: HashListener) -> None:
        self._listeners.append(listener)

    def get(self, vm_id: str) -> Vm:
        try:
            return self._vms[vm_id]
        except KeyError:
            raise UnknownVm(vm_id) from None

    def find(self, vm_id: str) -> Vm | None:
        return self._vms.get(vm_id)

    def load(self) -> list[Vm]:
        """Read the VMs a previous run left behind."""
        self._dir.mkdir(parents=True, exist_ok=True)
        for path in sorted(self._dir.glob("*.json")):
            try:
                vm = Vm.from_definition(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                log.error("skipping unreadable VM state %s: %s", path, exc)
                continue
            self._vms[vm.id] = vm
            self._notified[vm.id] = vm.hash
        return list(self._vms.values())

    def add(self, vm: Vm) -> None:
        self._vms[vm.id] = vm
        self.changed(vm)

    def remove(self, vm_id: str) -> Vm:
        vm = self.get(vm_id)
        del self._vms[vm_id]
        self._notified.pop(vm_id, None)
        self._mark_dirty(vm_id)
        return vm

    def changed(self, vm: Vm) -> None:
        """Call after mutating ``vm``: persists it and tells listeners if its hash moved."""
        if vm.id not in self._vms:
            return
        self._mark_dirty(vm.id)
        if self._notified.get(vm.id) == vm.hash:
            return
        self._notified[vm.id] = vm.hash
        for listener in self._listeners:
            try:
                listener(vm)
            except Exception:
                log.exception("hash listener failed")

    def _mark_dirty(self, vm_id: str) -> None:
        self._dirty.add(vm_id)
        self._dirty_event.set()

    async def flush(self) -> None:
        """Write every VM changed since the last flush (and delete removed ones)."""
        async with self._flush_lock:
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            for vm_id in sorted(dirty):
                await self._write(vm_id)

    async def _write(self, vm_id: str) -> None:
        path = self._dir / f"{vm_id}.json"
        vm = self._vms.get(vm_id)
        if vm is None:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
            return
        data = orjson.dumps(vm.to_definition(), option=orjson.OPT_INDENT_2)
        await asyncio.to_thread(atomic_write, path, data)

    async def flush_forever(self) -> None:
        """Background writer: flush whenever something became dirty."""
        while True:
            await self._dirty_event.wait()
            await self.flush()
