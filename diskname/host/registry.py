"""The host's VMs by id: the one place their state changes, is hashed, announced and saved.

Every change goes through a method here that builds the VM's new
:class:`~.vm.VmState`, swaps it into the VM's handle, tells the listeners when
the hash moved (the JSON-RPC ``VM_status`` broadcast, through its damper) and
marks the VM for writing under ``--state-dir``. The methods are synchronous:
on one event loop a change is atomic.

State files are private (0600 in a 0700 folder) and written atomically (tmp +
fsync + rename). A change the hypervisor confirmed is written before it is
acknowledged (:meth:`Registry.persist`); guest mapping changes are written in
the background at most once per ``write_interval`` per VM, so a guest that keeps
changing its mapping cannot make the host write without bound. A file that
cannot be read, or is of the wrong shape, is moved aside (``*.corrupt``) and
logged; a full disk is logged and retried: neither ever stops the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from .devices import Device, InvalidDevice, UnknownDevice
from .vm import AGENT, GuestMapping, Vm, VmState

log = logging.getLogger(__name__)

HashListener = Callable[[Vm], None]
WRITE_INTERVAL = 1.0
DIR_MODE, FILE_MODE = 0o700, 0o600


class UnknownVm(KeyError):
    """No VM with that id on this host."""


class BadStateFile(ValueError):
    """A state file that is not a VM definition."""


def _replace(path: Path, data: bytes) -> None:
    """Put ``data`` (mode 0600) in place of ``path``: a crash leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_files(folder: Path, batch: list[tuple[str, bytes | None]]) -> list[tuple[str, OSError]]:
    """Write (or, for None, delete) each VM's file, then sync the folder once.

    Returns the VMs whose file could not be written, with why.
    """
    failed = []
    for vm_id, data in batch:
        path = folder / f"{vm_id}.json"
        try:
            if data is None:
                path.unlink(missing_ok=True)
            else:
                _replace(path, data)
        except OSError as exc:
            failed.append((vm_id, exc))
    with contextlib.suppress(OSError):
        _fsync_dir(folder)
    return failed


def private_dir(path: Path) -> Path:
    """``path`` created if needed, and made 0700 whatever it was."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


def state_from_definition(data: Any) -> VmState:
    """A VM's state from its state file's JSON; :class:`BadStateFile` if it is not one."""
    if not isinstance(data, dict):
        raise BadStateFile("not a JSON object")
    vm_id, name = data.get("vmId"), data.get("name")
    if not isinstance(vm_id, str) or not isinstance(name, str):
        raise BadStateFile("vmId and name must be strings")
    raw_devices = data.get("devices", [])
    if not isinstance(raw_devices, list):
        raise BadStateFile("devices must be a list")
    try:
        devices = tuple(Device.from_json(d) for d in raw_devices)
    except InvalidDevice as exc:
        raise BadStateFile(f"a device is invalid: {exc}") from None
    mapping = data.get("guestDiskMapping") or {}
    # State written before there were two sources holds the agent's mapping only.
    sources = data.get("mappingSources") or ({AGENT: mapping} if mapping else {})
    if not _is_sources(sources):
        raise BadStateFile("mappingSources must map each source to a mapping of objects")
    status = data.get("status", "Up")
    if not isinstance(status, str):
        raise BadStateFile("status must be a string")
    return VmState.new(vm_id, name, devices, sources, status)


def _is_sources(sources: Any) -> bool:
    return isinstance(sources, dict) and all(
        isinstance(m, dict) and all(isinstance(e, dict) for e in m.values())
        for m in sources.values()
    )


class Registry:
    def __init__(self, state_dir: Path, write_interval: float = WRITE_INTERVAL) -> None:
        self._dir = state_dir / "vms"
        self._write_interval = write_interval
        self._vms: dict[str, Vm] = {}
        self._listeners: list[HashListener] = []
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._write_errors = 0

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

    # -- changes -------------------------------------------------------------

    def create(self, state: VmState) -> Vm:
        """Add a VM (or return the one with that id); it is announced and saved."""
        existing = self._vms.get(state.id)
        if existing is not None:
            return existing
        vm = self._vms[state.id] = Vm(state)
        self._announce(vm)
        self._mark_dirty(vm.id)
        return vm

    def remove(self, vm_id: str) -> Vm:
        vm = self.get(vm_id)
        del self._vms[vm_id]
        self._mark_dirty(vm_id)
        return vm

    def set_devices(self, vm_id: str, devices: tuple[Device, ...]) -> Vm:
        vm = self.get(vm_id)
        return self._apply(vm, vm.state.with_devices(devices))

    def add_device(self, vm_id: str, device: Device) -> Vm:
        vm = self.get(vm_id)
        devices = (*(d for d in vm.devices if d.disk_id != device.disk_id), device)
        return self._apply(vm, vm.state.with_devices(devices))

    def remove_device(self, vm_id: str, disk_id: str) -> Vm:
        vm = self.get(vm_id)
        if vm.state.device(disk_id) is None:
            raise UnknownDevice(disk_id)
        devices = tuple(d for d in vm.devices if d.disk_id != disk_id)
        return self._apply(vm, vm.state.with_devices(devices))

    def set_status(self, vm_id: str, status: str) -> Vm:
        vm = self.get(vm_id)
        return self._apply(vm, vm.state.with_status(status))

    def set_mapping(self, vm_id: str, source: str, mapping: GuestMapping) -> bool:
        """Record ``source``'s latest mapping; True if the VM's hash changed."""
        vm = self._vms.get(vm_id)
        if vm is None or vm.state.sources.get(source) == mapping:
            return False
        before = vm.hash
        self._apply(vm, vm.state.with_source(source, mapping))
        return vm.hash != before

    def _apply(self, vm: Vm, state: VmState) -> Vm:
        old = vm._swap(state)
        if state != old:
            self._mark_dirty(vm.id)
        if state.hash != old.hash:
            self._announce(vm)
        return vm

    def _announce(self, vm: Vm) -> None:
        for listener in self._listeners:
            try:
                listener(vm)
            except Exception:
                log.exception("hash listener failed")

    def _mark_dirty(self, vm_id: str) -> None:
        self._dirty.add(vm_id)
        self._dirty_event.set()

    # -- persistence ---------------------------------------------------------

    def load(self) -> list[Vm]:
        """Read the VMs a previous run left behind; bad files are moved aside."""
        private_dir(self._dir.parent)
        private_dir(self._dir)
        for path in sorted(self._dir.glob("*.json")):
            try:
                state = state_from_definition(orjson.loads(path.read_bytes()))
            except (OSError, orjson.JSONDecodeError, BadStateFile) as exc:
                self._quarantine(path, exc)
                continue
            os.chmod(path, FILE_MODE)
            self._vms[state.id] = Vm(state)
        return list(self._vms.values())

    def _quarantine(self, path: Path, exc: Exception) -> None:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        try:
            os.replace(path, aside)
        except OSError as move_exc:
            log.error("cannot read VM state %s (%s) nor move it aside: %s", path, exc, move_exc)
            return
        log.error("VM state %s is unreadable (%s): moved aside to %s", path, exc, aside.name)

    async def persist(self, vm_id: str) -> None:
        """Write the VM now (a change about to be acknowledged), with every other
        change waiting: concurrent plugs share one pass and one folder fsync.

        A failure is logged and the VM stays marked, so the background writer
        tries again: a full disk delays the file, never the host.
        """
        self._mark_dirty(vm_id)
        await self.flush()

    async def flush(self) -> None:
        """Write every VM changed since the last flush (and delete removed ones)."""
        async with self._write_lock:
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            if not dirty:
                return
            batch = [(vm_id, self._file_of(vm_id)) for vm_id in sorted(dirty)]
            failed = await asyncio.to_thread(_write_files, self._dir, batch)
        for vm_id, exc in failed:
            self._write_failed(vm_id, exc)
        if not failed and self._write_errors:
            log.info("VM state is written again (after %d failures)", self._write_errors)
            self._write_errors = 0

    def _file_of(self, vm_id: str) -> bytes | None:
        """The VM's state file's content; None: the VM is gone, so is its file."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return None
        return orjson.dumps(vm.state.to_definition(), option=orjson.OPT_INDENT_2)

    def _write_failed(self, vm_id: str, exc: OSError) -> None:
        self._write_errors += 1
        self._dirty.add(vm_id)
        self._dirty_event.set()
        level = logging.ERROR if self._write_errors == 1 else logging.DEBUG
        why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        log.log(level, "cannot write VM state %s (%s); retrying", vm_id, why)

    async def flush_forever(self) -> None:
        """Background writer: at most one pass per ``write_interval``."""
        while True:
            await self._dirty_event.wait()
            await self.flush()
            await asyncio.sleep(self._write_interval)

    @property
    def write_errors(self) -> int:
        """Failed writes since the last successful one."""
        return self._write_errors
