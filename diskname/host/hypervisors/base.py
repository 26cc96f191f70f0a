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
        """Tell the guest's hardware that ``device`` (already in ``vm.devices``) is plugged."""

    async def hotunplug(self, vm: Vm, device: dict[str, Any]) -> None:
        """Tell the guest's hardware that ``device`` (already removed) is gone."""

    async def close(self) -> None:
        """Stop every VM's hardware."""
