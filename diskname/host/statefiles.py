"""The host's VM state files under ``<state-dir>/vms``: one ``<vm_id>.json`` a VM.

Files are private (0600 in a 0700 folder) and written atomically (tmp + fsync
+ rename). A change the hypervisor confirmed is written before it is
acknowledged (:meth:`StateFiles.persist`), and changes that wait meanwhile
share the next pass and its one folder fsync (a group commit). Guest mapping
changes are written in the background at most once per ``write_interval``, so
a guest that keeps changing its mapping cannot make the host write without
bound. A file that cannot be read, or is of the wrong shape, is moved aside
(``*.corrupt-<ts>``) and logged (the engine gives the host its VMs back: SPEC
§19); a full disk is logged and retried: neither ever stops the host. A change
about to be acknowledged whose file cannot be written is refused instead
(:class:`StateNotWritten` from :meth:`StateFiles.persist`): the caller undoes it.

What a VM's file holds comes from the ``current`` callable (the registry's
:meth:`~.registry.Registry.state`); this module never changes a VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from .vm import BadStateFile, VmState, state_from_definition

log = logging.getLogger(__name__)

CurrentState = Callable[[str], VmState | None]
WRITE_INTERVAL = 1.0
DIR_MODE, FILE_MODE = 0o700, 0o600


class StateNotWritten(Exception):
    """The VM's state file could not be written: the change must not be acknowledged."""

    def __init__(self, vm_id: str, cause: OSError) -> None:
        why = "the disk is full" if cause.errno == errno.ENOSPC else cause.strerror or str(cause)
        super().__init__(f"cannot write the state of VM {vm_id}: {why}")
        self.vm_id = vm_id


def private_dir(path: Path) -> Path:
    """``path`` created if needed, and made 0700 whatever it was."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(path, DIR_MODE)
    return path


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


def _quarantine(path: Path, exc: Exception) -> None:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    try:
        os.replace(path, aside)
    except OSError as move_exc:
        log.error("cannot read VM state %s (%s) nor move it aside: %s", path, exc, move_exc)
        return
    log.error("VM state %s is unreadable (%s): moved aside to %s", path, exc, aside.name)


class StateFiles:
    def __init__(
        self, folder: Path, current: CurrentState, write_interval: float = WRITE_INTERVAL
    ) -> None:
        self.folder = folder
        self._current = current
        self._write_interval = write_interval
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._failures = 0  # failed writes since the last pass that wrote everything
        self._unwritten: dict[str, OSError] = {}  # VMs whose last write failed, and why

    def load(self) -> list[VmState]:
        """The VMs a previous run left behind; bad files are moved aside."""
        private_dir(self.folder.parent)
        private_dir(self.folder)
        states = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                states.append(state_from_definition(orjson.loads(path.read_bytes())))
            except (OSError, orjson.JSONDecodeError, BadStateFile) as exc:
                _quarantine(path, exc)
                continue
            os.chmod(path, FILE_MODE)
        return states

    def mark(self, vm_id: str) -> None:
        """The VM changed (or went): write it in the next pass."""
        self._dirty.add(vm_id)
        self._dirty_event.set()

    async def persist(self, vm_id: str) -> None:
        """Write the VM now (a change about to be acknowledged), with every other
        change waiting: concurrent plugs share one pass and one folder fsync.

        :class:`StateNotWritten` when the pass that wrote the VM failed for it: the
        caller refuses the change and undoes it. The VM stays marked, so the
        background writer writes whatever it holds once it can.
        """
        await self.persist_or_retry(vm_id)
        failed = self._unwritten.get(vm_id)
        if failed is not None:
            raise StateNotWritten(vm_id, failed)

    async def persist_or_retry(self, vm_id: str) -> None:
        """As :meth:`persist`, for a change that cannot be refused (a VM the hypervisor
        reports, one destroyed): a failure is logged and retried, not raised."""
        self.mark(vm_id)
        await self.flush()

    async def flush(self) -> None:
        """Write every VM changed since the last flush (and delete removed ones)."""
        async with self._write_lock:
            self._dirty_event.clear()
            dirty, self._dirty = self._dirty, set()
            if not dirty:
                return
            batch = [(vm_id, self._content(vm_id)) for vm_id in sorted(dirty)]
            failed = await asyncio.to_thread(_write_files, self.folder, batch)
        for vm_id in dirty:
            self._unwritten.pop(vm_id, None)
        for vm_id, exc in failed:
            self._write_failed(vm_id, exc)
        if not failed and self._failures:
            log.info("VM state is written again (after %d failures)", self._failures)
            self._failures = 0

    async def flush_forever(self) -> None:
        """Background writer: at most one pass per ``write_interval``."""
        while True:
            await self._dirty_event.wait()
            await self.flush()
            await asyncio.sleep(self._write_interval)

    def _content(self, vm_id: str) -> bytes | None:
        """The VM's state file's content; None: the VM is gone, so is its file."""
        state = self._current(vm_id)
        if state is None:
            return None
        return orjson.dumps(state.to_definition(), option=orjson.OPT_INDENT_2)

    def _write_failed(self, vm_id: str, exc: OSError) -> None:
        self._failures += 1
        self._unwritten[vm_id] = exc
        self.mark(vm_id)
        level = logging.ERROR if self._failures == 1 else logging.DEBUG
        why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
        log.log(level, "cannot write VM state %s (%s); retrying", vm_id, why)
