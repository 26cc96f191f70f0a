"""Light guests (``bench --guests light``): each host names its VMs' disks itself.

A full-agent fleet costs a process's worth of sockets, tasks and heartbeats per
VM, which caps the bench at ~10,000 VMs on one machine. Here the guests live in
the host process, behind the host's hypervisor seam: :class:`LightSim` is a sim
hypervisor with no hardware port, no agent process, channel or heartbeat per VM.
Each VM's guest is the agent's own sim source fed in-process
(:class:`~diskname.agent.sources.sim.SimSource`: vdX/sdX/nvmeXn1, lowest free
letter, a growing diskseq, a new disk visible ``name_delay`` seconds after the
plug), its mapping built by the agent's own code
(:func:`~diskname.agent.records.build_mapping`) and handed to the host as a
guest source would hand it (:meth:`~diskname.host.hypervisors.base.Inventory.guest_mapping`).
The host runs with ``agent_channels=False``, so it opens nothing per VM.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..agent.records import build_mapping, mapping_json
from ..agent.sources.sim import SimSource
from ..host.devices import Device
from ..host.hypervisors.base import Inventory, StaticInventory
from ..host.hypervisors.sim import hardware_state
from ..host.vm import AGENT, VmState


class LightGuest:
    """One VM's simulated guest kernel, reporting through a callback."""

    def __init__(self, vm_id: str, name_delay: float, owner: LightSim) -> None:
        self.vm_id, self._owner = vm_id, owner
        self.source = SimSource(None, name_delay, on_change=self._changed)

    def hardware(self, devices: Iterable[Device]) -> None:
        """The VM's plugged disks are now ``devices`` (the first call is the boot)."""
        self.source.apply(hardware_state(devices))

    def mapping(self) -> dict[str, dict[str, object]]:
        return mapping_json(build_mapping(self.source.snapshot()))

    def _changed(self) -> None:
        self._owner.publish(self)

    async def close(self) -> None:
        await self.source.close()


class LightSim(StaticInventory):
    """The sim hypervisor with its guests in the host process (a :class:`Hypervisor`)."""

    name = "sim"

    def __init__(self, name_delay: float = 0.05) -> None:
        self._name_delay = name_delay
        self._guests: dict[str, LightGuest] = {}
        self._inventory: Inventory | None = None

    async def run(self, inventory: Inventory) -> None:
        """The host is ready to hear from guests: report those that booted before."""
        self._inventory = inventory
        for guest in self._guests.values():
            self.publish(guest)

    def publish(self, guest: LightGuest) -> None:
        if self._inventory is not None and guest.vm_id in self._guests:
            self._inventory.guest_mapping(guest.vm_id, AGENT, guest.mapping())

    async def start_vm(self, vm: VmState) -> None:
        if vm.id in self._guests:
            return
        guest = self._guests[vm.id] = LightGuest(vm.id, self._name_delay, self)
        guest.hardware(vm.devices)

    async def stop_vm(self, vm_id: str) -> None:
        guest = self._guests.pop(vm_id, None)
        if guest is not None:
            await guest.close()

    async def hotplug(self, vm: VmState, device: Device) -> Device:
        self._hardware(vm.id, (*vm.devices, device))
        return device

    async def hotunplug(self, vm: VmState, device: Device) -> None:
        self._hardware(vm.id, tuple(d for d in vm.devices if d.disk_id != device.disk_id))

    def _hardware(self, vm_id: str, devices: tuple[Device, ...]) -> None:
        guest = self._guests.get(vm_id)
        if guest is not None:
            guest.hardware(devices)

    async def close(self) -> None:
        for vm_id in list(self._guests):
            await self.stop_vm(vm_id)
