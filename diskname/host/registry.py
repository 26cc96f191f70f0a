"""The host's VMs by id: the one place their state changes.

Every change goes through a method here that builds the VM's new frozen
:class:`~.vm.VmState` and swaps it into the VM's handle. Two kinds of listener
hear of it: hash listeners when the VM's hash moved (the JSON-RPC ``VM_status``
broadcast, through its damper) and change listeners whenever what a state file
holds changed or the VM went (:class:`~.statefiles.StateFiles` writes it). The
methods are synchronous and do no I/O: on one event loop a change is atomic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from .devices import Device, UnknownDevice
from .vm import GuestMapping, Vm, VmState

log = logging.getLogger(__name__)

HashListener = Callable[[Vm], None]
ChangeListener = Callable[[str], None]


class UnknownVm(KeyError):
    """No VM with that id on this host."""


class Registry:
    def __init__(self) -> None:
        self._vms: dict[str, Vm] = {}
        self._hash_listeners: list[HashListener] = []
        self._change_listeners: list[ChangeListener] = []

    def __iter__(self) -> Iterator[Vm]:
        return iter(list(self._vms.values()))

    def __len__(self) -> int:
        return len(self._vms)

    def on_hash_change(self, listener: HashListener) -> None:
        """Call ``listener(vm)`` whenever a VM's hash moved (or a new VM appeared)."""
        self._hash_listeners.append(listener)

    def on_state_change(self, listener: ChangeListener) -> None:
        """Call ``listener(vm_id)`` whenever a VM's state changed or the VM went."""
        self._change_listeners.append(listener)

    def get(self, vm_id: str) -> Vm:
        try:
            return self._vms[vm_id]
        except KeyError:
            raise UnknownVm(vm_id) from None

    def find(self, vm_id: str) -> Vm | None:
        return self._vms.get(vm_id)

    def state(self, vm_id: str) -> VmState | None:
        """The VM's current state; None once it is gone."""
        vm = self._vms.get(vm_id)
        return None if vm is None else vm.state

    # -- changes -------------------------------------------------------------

    def recover(self, states: Iterable[VmState]) -> list[Vm]:
        """Take back VMs a previous run saved: nothing to announce nor to write."""
        for state in states:
            self._vms[state.id] = Vm(state)
        return list(self._vms.values())

    def create(self, state: VmState) -> Vm:
        """Add a VM (or return the one with that id); it is announced and saved."""
        existing = self._vms.get(state.id)
        if existing is not None:
            return existing
        vm = self._vms[state.id] = Vm(state)
        self._announce(vm)
        self._changed(vm.id)
        return vm

    def remove(self, vm_id: str) -> Vm:
        vm = self.get(vm_id)
        del self._vms[vm_id]
        self._changed(vm_id)
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

    def source_gone(self, vm_id: str, source: str, why: str) -> None:
        """A guest source went (qemu-ga disconnected, the guest stopped): its mapping no
        longer counts (SPEC §17); a VM with no source left keeps its names, stale."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return
        self._apply(vm, vm.state.without_source(source))
        vm.source_gone(source, why)

    def guest_reset(self, vm_id: str, why: str) -> None:
        """The guest reset (rebooted, powered off): drop every source's mapping (the names
        stay, stale) and mark its sources gone until one reports again (SPEC §17)."""
        vm = self._vms.get(vm_id)
        if vm is None:
            return
        self._apply(vm, vm.state.reset())
        vm.sources_reset(why)

    def _apply(self, vm: Vm, state: VmState) -> Vm:
        old = vm._swap(state)
        if state != old:
            self._changed(vm.id)
        if state.hash != old.hash:
            self._announce(vm)
        return vm

    def _announce(self, vm: Vm) -> None:
        for listener in self._hash_listeners:
            try:
                listener(vm)
            except Exception:
                log.exception("hash listener failed")

    def _changed(self, vm_id: str) -> None:
        for listener in self._change_listeners:
            listener(vm_id)
