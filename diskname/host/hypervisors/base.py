"""The seam a hypervisor backend fills (sim, QEMU over QMP, libvirt).

The host service owns the VMs' state (the registry); a backend plugs and unplugs
disks when asked, and a backend that knows VMs of its own (libvirt: every domain
is a VM) reports them and their device changes through the :class:`Inventory`
the service hands to :meth:`Hypervisor.run`. Backends never touch the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..devices import Device
from ..vm import VmState


class HypervisorError(Exception):
    """The hypervisor could not do what was asked; the message is for the caller."""


class Inventory(Protocol):
    """What a backend may tell the host about VMs it found or saw change."""

    def vm_ids(self) -> frozenset[str]:
        """The VMs the host holds (some may be left from before a restart)."""

    async def vm_found(
        self,
        vm_id: str,
        name: str,
        devices: Sequence[Device],
        channel: Path | None,
        status: str = "Up",
    ) -> None:
        """A VM exists (again) with these devices; ``channel``: its agent socket;
        ``status`` as the engine shows it (``Up``, ``Paused``, ``Down``...)."""

    async def vm_devices(self, vm_id: str, devices: Sequence[Device]) -> None:
        """The VM's devices are now these (a change made outside the host)."""

    async def vm_gone(self, vm_id: str) -> None:
        """The VM no longer exists."""

    def guest_mapping(self, vm_id: str, source: str, mapping: Mapping[str, Any]) -> None:
        """A guest disk mapping from a source the backend reads (qemu-ga via libvirt)."""

    def guest_rejected(self, vm_id: str, reason: str) -> None:
        """Guest input that source sent was dropped for ``reason`` (counted per VM)."""

    def guest_gone(self, vm_id: str, source: str, why: str = "the guest stopped") -> None:
        """That source of the guest's mapping is gone (the guest stopped, qemu-ga
        disconnected): its mapping no longer counts; a VM with no source left keeps
        its names, marked stale (SPEC §17)."""

    def guest_reset(self, vm_id: str, why: str) -> None:
        """The guest reset or stopped (a reboot, a power-off): every source's mapping is
        dropped and no source counts until it reports again; the names stay, stale."""


class Hypervisor(Protocol):
    name: str
    # True when VMs come from the backend (run() reports them), not from VM.create.
    owns_vms: bool

    async def run(self, inventory: Inventory) -> None:
        """Watch the hypervisor for the host's lifetime (return at once if nothing to watch)."""

    def agent_channel(self, vm_id: str) -> Path | None:
        """Where the VM's agent channel socket is; None: the host's convention."""

    def poke(self, vm_id: str) -> None:
        """The VM's disks changed: re-read guest sources the backend polls."""

    async def start_vm(self, vm: VmState) -> None:
        """Make the VM's virtual hardware exist (idempotent)."""

    async def stop_vm(self, vm_id: str) -> None:
        """Tear the VM's hardware down (idempotent)."""

    async def hotplug(self, vm: VmState, device: Device) -> Device:
        """Plug ``device`` (not yet in ``vm.devices``); raise if the hypervisor refuses.

        Returns the device as plugged (a backend may fill in the real address);
        the caller records it only after this returns."""

    async def hotunplug(self, vm: VmState, device: Device) -> None:
        """Unplug ``device`` (still in ``vm.devices``); raise if it stays plugged.

        The caller removes the device from the VM only after this returns."""

    async def discard(self, disk_id: str) -> None:
        """The disk left its VM for good: remove an image the backend made for it."""

    async def close(self) -> None:
        """Stop every VM's hardware."""


class StaticInventory:
    """Defaults for a backend whose VMs come from ``VM.create`` (sim, QEMU)."""

    owns_vms = False

    async def run(self, inventory: Inventory) -> None:
        return None

    def agent_channel(self, vm_id: str) -> Path | None:
        return None

    def poke(self, vm_id: str) -> None:
        return None

    async def discard(self, disk_id: str) -> None:
        return None
