"""The seam a hypervisor backend fills (sim now, QEMU over QMP later)."""

from __future__ import annotations

from typing import Any, Protocol

from ..vm import Vm


class HypervisorError(Exception):
    """The hypervisor could not do what was asked."""


class Hypervisor(Protocol):
    name: str

    async def start_vm(self, vm: Vm) -> None:
        """Make the VM's virtual hardware exist (idempotent)."""

    async def stop_vm(self, vm_id: str) -> None:
        """Tear the VM's hardware down (idempotent)."""

    async def hotplug(self, vm: Vm, device: dict[str, Any]) -> None:
        """Plug ``device`` (not yet in ``vm.devices``); raise if the hypervisor refuses.

        The caller adds the device to the VM only after this returns."""

    async def hotunplug(self, vm: Vm, device: dict[str, Any]) -> None:
        """Unplug ``device`` (still in ``vm.devices``); raise if it stays plugged.

        The caller removes the device from the VM only after this returns."""

    async def close(self) -> None:
        """Stop every VM's hardware."""
