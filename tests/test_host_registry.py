"""The host's VM map on its own: no files, no sockets, no event loop."""

from __future__ import annotations

import uuid

import pytest

from diskname.host.devices import UnknownDevice, devices_for
from diskname.host.registry import Registry, UnknownVm
from diskname.host.vm import AGENT, QEMU_GA, Vm, VmState

pytestmark = pytest.mark.timeout(10)


class Heard:
    """What the registry's listeners were told, in order."""

    def __init__(self, registry: Registry) -> None:
        self.hashes: list[tuple[str, str]] = []
        self.changes: list[str] = []
        registry.on_hash_change(lambda vm: self.hashes.append((vm.id, vm.hash)))
        registry.on_state_change(self.changes.append)

    def clear(self) -> None:
        self.hashes.clear()
        self.changes.clear()


def drives(n: int) -> list[dict[str, str]]:
    return [{"diskId": str(uuid.uuid4()), "iface": "virtio"} for _ in range(n)]


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_a_new_vm_is_announced_and_marked_once_and_a_second_create_returns_it(
    registry: Registry,
) -> None:
    heard = Heard(registry)
    vm = registry.create(VmState.new("v1", "web", devices_for(drives(1))))
    assert heard.hashes == [("v1", vm.hash)] and heard.changes == ["v1"]
    again = registry.create(VmState.new("v1", "other name"))
    assert again is vm and vm.name == "web" and len(heard.changes) == 1
    assert list(registry) == [vm] and len(registry) == 1


def test_recovered_vms_are_neither_announced_nor_written(registry: Registry) -> None:
    heard = Heard(registry)
    vms = registry.recover([VmState.new("a", "a"), VmState.new("b", "b")])
    assert [vm.id for vm in vms] == ["a", "b"]
    assert heard.hashes == [] and heard.changes == []
    assert registry.state("a") == VmState.new("a", "a")


def test_a_device_change_swaps_a_new_frozen_state_and_moves_the_hash(registry: Registry) -> None:
    vm = registry.create(VmState.new("v1", "web"))
    heard = Heard(registry)
    before = vm.state
    (device,) = devices_for(drives(1))
    registry.add_device("v1", device)
    assert before.devices == () and vm.devices == (device,)
    assert heard.hashes == [("v1", vm.hash)] and vm.hash != before.hash
    assert heard.changes == ["v1"]
    heard.clear()
    registry.remove_device("v1", device.disk_id)
    assert vm.devices == () and vm.hash == before.hash and heard.changes == ["v1"]


def test_a_status_change_is_written_but_not_announced(registry: Registry) -> None:
    vm = registry.create(VmState.new("v1", "web"))
    heard = Heard(registry)
    registry.set_status("v1", "Paused")
    assert vm.state.status == "Paused" and heard.changes == ["v1"] and heard.hashes == []
    registry.set_status("v1", "Paused")  # the same state: nothing to tell
    assert heard.changes == ["v1"]


def test_a_mapping_moves_the_hash_only_when_the_merged_mapping_moves(registry: Registry) -> None:
    registry.create(VmState.new("v1", "web"))
    heard = Heard(registry)
    entry = {"s1": {"name": "/dev/vdb"}}
    assert registry.set_mapping("v1", AGENT, entry) is True
    assert registry.set_mapping("v1", AGENT, entry) is False  # unchanged: nothing at all
    assert len(heard.hashes) == 1 and heard.changes == ["v1"]
    # qemu-ga naming the same disk leaves the merge (and so the hash) alone, but
    # the raw source is part of the state file.
    assert registry.set_mapping("v1", QEMU_GA, {"q1": {"name": "/dev/vdb"}}) is False
    assert len(heard.hashes) == 1 and heard.changes == ["v1", "v1"]
    assert registry.set_mapping("gone", AGENT, entry) is False


def test_removing_a_vm_marks_it_and_unknown_ids_raise(registry: Registry) -> None:
    registry.create(VmState.new("v1", "web"))
    heard = Heard(registry)
    registry.remove("v1")
    assert heard.changes == ["v1"] and registry.find("v1") is None
    assert registry.state("v1") is None
    with pytest.raises(UnknownVm):
        registry.get("v1")
    with pytest.raises(UnknownVm):
        registry.set_status("v1", "Up")
    registry.create(VmState.new("v2", "db"))
    with pytest.raises(UnknownDevice):
        registry.remove_device("v2", str(uuid.uuid4()))


def test_a_failing_hash_listener_does_not_stop_the_change_nor_the_others(
    registry: Registry,
) -> None:
    def broken(vm: Vm) -> None:
        raise RuntimeError("listener bug")

    registry.on_hash_change(broken)
    heard = Heard(registry)
    vm = registry.create(VmState.new("v1", "web"))
    assert heard.hashes == [("v1", vm.hash)] and registry.find("v1") is vm


def test_rejected_guest_input_is_counted_through_one_method() -> None:
    vm = Vm(VmState.new("v1", "web"))
    vm.reject("flood")
    vm.reject("flood")
    vm.reject("qga_bad_reply")
    assert vm.rejected == {"flood": 2, "qga_bad_reply": 1}
    assert vm.rejected["oversized"] == 0
    with pytest.raises(TypeError):
        vm.rejected["flood"] = 0  # type: ignore[index]
