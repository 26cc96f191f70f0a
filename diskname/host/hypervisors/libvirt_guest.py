"""qemu-ga through libvirt: one VM's ``guestInfo(DISKS)`` poller (SPEC §13).

libvirt owns the ``org.qemu.guest_agent.0`` socket, so the host asks libvirt
rather than qemu-ga itself. qemu-ga is pull only: the poller asks when it
starts, when qemu-ga connects (libvirt's agent lifecycle event), right after
every change of the VM's disks and a few times while the guest settles
(``host/qga.py``'s recheck delays), then every ``interval`` seconds. Answers
are guest input: a bad one is dropped and counted in ``Vm.rejected`` (as
``qga_<reason>``, like the host's own qemu-ga channel's).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import libvirt

from ...protocol.errors import RemoteProtocolError
from ..qga import HOTPLUG_RECHECKS
from ..vm import QEMU_GA
from . import libvirt_model as model
from .base import HypervisorError, Inventory
from .libvirt_xml import Domain

log = logging.getLogger(__name__)

Call = Callable[..., Awaitable[Any]]


class GuestInfoPoller:
    """Keeps one VM's ``qemu-ga`` mapping source current through libvirt."""

    def __init__(
        self, vm_id: str, handle: Any, call: Call, inventory: Inventory, interval: float
    ) -> None:
        self.vm_id, self._handle, self._call, self._inventory = vm_id, handle, call, inventory
        self.schedule = model.Schedule(interval, HOTPLUG_RECHECKS)
        self.domain: Domain | None = None
        self.queries = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_error: int | None = None
        self._resets = 0

    def reset(self) -> None:
        """The guest reset: an answer to a question asked before is dropped."""
        self._resets += 1

    def poke(self) -> None:
        self.schedule.poke(asyncio.get_running_loop().time())
        self._wake.set()

    def resume(self, handle: Any) -> None:
        """(Re)start asking, through ``handle`` (a new one after a reconnect)."""
        self._handle = handle
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"guest-info {self.vm_id}")

    def pause(self) -> None:
        """Stop asking until :meth:`resume` (libvirt is away)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wait_due(loop)
            await self._ask()
            self.schedule.asked(loop.time())

    async def _wait_due(self, loop: asyncio.AbstractEventLoop) -> None:
        while (delay := self.schedule.next_due() - loop.time()) > 0:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _ask(self) -> None:
        resets = self._resets
        try:
            params = await self._call(
                self._handle.guestInfo, libvirt.VIR_DOMAIN_GUEST_INFO_DISKS, 0
            )
        except HypervisorError as exc:
            # Mostly "qemu-ga is not connected" (still booting, or not installed).
            code = getattr(exc, "code", None)
            level = logging.DEBUG if code == self._last_error else logging.INFO
            log.log(level, "VM %s: no guest info from libvirt: %s", self.vm_id, exc)
            self._last_error = code
            return
        self._last_error = None
        domain = self.domain
        if domain is None or not isinstance(params, dict) or resets != self._resets:
            return
        try:
            mapping = model.mapping_from_guest_info(params, domain)
        except RemoteProtocolError as exc:
            self._inventory.guest_rejected(self.vm_id, f"qga_{exc.reason}")
            return
        self.queries += 1
        self._inventory.guest_mapping(self.vm_id, QEMU_GA, mapping)
