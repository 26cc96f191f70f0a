"""A guest reset (reboot, power-off) on the host's side, without sockets (SPEC §17, issue 21).

Between a guest's reboot and the first report of its new boot the names it gave
may no longer hold (letters can reorder at boot). The host learns of the reset
from the hypervisor (QMP ``RESET``, libvirt's ``REBOOT`` event): every source's
mapping is dropped, the VM's guest agent is not ``up`` (so the engine marks the
names stale) until a source sends a mapping again, and the names of before are
kept, never merged with those of the new boot.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from diskname.host.freshness import Change, Freshness
from diskname.host.hypervisors import libvirt_model as model
from diskname.host.registry import Registry
from diskname.host.vm import AGENT, QEMU_GA, GuestMapping, VmState, state_from_definition

pytestmark = pytest.mark.timeout(10)

SERIAL = "serialA0123456789012"
BEFORE = {SERIAL: {"name": "/dev/vdc", "serial": SERIAL}}  # named after X, before the reboot
AFTER = {SERIAL: {"name": "/dev/vdb", "serial": SERIAL}}  # X gone: one letter earlier


def test_a_reset_makes_every_source_go_and_a_heartbeat_does_not_bring_it_back() -> None:
    fresh = Freshness(wall=0.0)
    fresh.confirm(AGENT, now=1.0, wall=101.0, heartbeats=True)
    fresh.confirm(QEMU_GA, now=1.0, wall=101.0, heartbeats=False)
    assert fresh.reset(wall=110.0) == ((AGENT, QEMU_GA), "up", "unresponsive")
    assert (fresh.status, fresh.since, fresh.sources) == ("unresponsive", 110.0, ())
    # The new boot's agent heartbeats before it sends its mapping: not yet up.
    assert fresh.seen(AGENT, now=20.0, wall=120.0, heartbeats=True) is None
    assert fresh.status == "unresponsive"
    came = fresh.confirm(AGENT, now=21.0, wall=121.0, heartbeats=True)
    assert came == Change(AGENT, True, "spoke", "unresponsive", "up")
    assert (fresh.status, fresh.since, fresh.sources) == ("up", 121.0, (AGENT,))
    # Once it vouched again, its heartbeats keep it up as before.
    assert fresh.seen(AGENT, now=25.0, wall=125.0, heartbeats=True) is None
    assert fresh.next_expiry(timeout=15) == 40.0


def test_a_source_first_heard_after_a_reset_must_send_a_mapping_too() -> None:
    fresh = Freshness(wall=0.0)
    assert fresh.reset(wall=5.0) == ((), "none", "none")  # nothing spoke: still none
    assert fresh.seen(AGENT, now=1.0, wall=6.0, heartbeats=True) is None
    assert fresh.status == "none"
    assert fresh.confirm(QEMU_GA, now=2.0, wall=7.0, heartbeats=False) is not None
    assert (fresh.status, fresh.sources) == ("up", (QEMU_GA,))


def _report(registry: Registry, vm_id: str, source: str, mapping: GuestMapping) -> None:
    """What the service does with every mapping a source sends (``_guest_report``)."""
    registry.set_mapping(vm_id, source, mapping)
    registry.get(vm_id).source_confirmed(source, 0.0, heartbeats=source == AGENT)


def _booted(registry: Registry) -> str:
    registry.create(VmState.new("v1", "web"))
    _report(registry, "v1", AGENT, BEFORE)
    _report(registry, "v1", QEMU_GA, BEFORE)
    assert registry.get("v1").agent_status() == "up"
    return "v1"


def test_a_reset_drops_the_sources_keeps_the_names_and_makes_the_vm_not_up() -> None:
    registry = Registry()
    vm_id = _booted(registry)
    vm = registry.get(vm_id)
    announced: list[str] = []
    written: list[str] = []
    registry.on_hash_change(lambda v: announced.append(v.hash))
    registry.on_state_change(written.append)
    before = vm.hash
    registry.guest_reset(vm_id, "the guest rebooted")
    assert vm.sources == {}
    assert vm.mapping == BEFORE and vm.hash == before  # kept: the engine keeps them, stale
    assert vm.agent_status() == "unresponsive" and vm.freshness.sources == ()
    assert announced == [] and written == [vm_id]  # the state file forgets the sources


def test_after_a_reset_the_first_report_wins_and_the_pre_reboot_mapping_never_does() -> None:
    registry = Registry()
    vm_id = _booted(registry)
    vm = registry.get(vm_id)
    registry.guest_reset(vm_id, "the guest rebooted")
    # qemu-ga answers first in the new boot; the agent's pre-reboot mapping, which
    # wins a merge, is gone and cannot hide the new name.
    _report(registry, vm_id, QEMU_GA, AFTER)
    assert vm.mapping == AFTER and vm.sources == {QEMU_GA: AFTER}
    assert vm.agent_status() == "up"
    _report(registry, vm_id, AGENT, AFTER)
    assert vm.mapping == AFTER and set(vm.sources) == {AGENT, QEMU_GA}
    # Before the fix the agent's last mapping stayed and won: /dev/vdc after the reboot.
    stale = VmState.new(vm_id, "web", sources={AGENT: BEFORE, QEMU_GA: AFTER})
    assert stale.mapping == BEFORE


def test_a_reset_survives_a_host_restart_without_the_names_becoming_the_agents() -> None:
    registry = Registry()
    vm_id = _booted(registry)
    registry.guest_reset(vm_id, "the guest rebooted")
    saved = registry.get(vm_id).state.to_definition()
    recovered = state_from_definition(saved)
    assert recovered.sources == {} and recovered.mapping == BEFORE
    after = recovered.with_source(QEMU_GA, AFTER)
    assert after.mapping == AFTER and after.kept == {}
    # A state file of before keptMapping existed still reads as the agent's mapping.
    old = {k: v for k, v in saved.items() if k not in ("keptMapping", "mappingSources")}
    assert state_from_definition(old).sources == {AGENT: BEFORE}


def test_a_device_change_during_the_reset_keeps_the_names() -> None:
    registry = Registry()
    vm_id = _booted(registry)
    registry.guest_reset(vm_id, "the guest rebooted")
    registry.set_devices(vm_id, ())
    assert registry.get(vm_id).mapping == BEFORE


def test_a_source_that_goes_no_longer_counts_unless_it_was_the_last() -> None:
    registry = Registry()
    vm_id = _booted(registry)
    vm = registry.get(vm_id)
    registry.set_mapping(vm_id, AGENT, AFTER)
    registry.source_gone(vm_id, QEMU_GA, "qemu-ga disconnected")
    assert vm.sources == {AGENT: AFTER} and vm.agent_status() == "up"
    registry.source_gone(vm_id, AGENT, "the guest stopped")
    assert vm.sources == {} and vm.mapping == AFTER  # the last names stay, stale
    assert vm.agent_status() == "unresponsive"
    registry.source_gone("not-here", AGENT, "x")  # an unknown VM: nothing


def test_a_reset_is_one_info_line_per_vm(caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()
    vm_id = _booted(registry)
    with caplog.at_level(logging.INFO, logger="diskname.host.vm"):
        registry.guest_reset(vm_id, "QMP RESET, the guest reset: guest-reset")
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        "VM v1: guest reset (QMP RESET, the guest reset: guest-reset): mappings dropped,"
        " sources gone: agent, qemu-ga; guest agent up -> unresponsive"
    )
    registry.guest_reset("not-here", "x")  # an unknown VM: nothing


def test_libvirt_reboot_and_qemu_ga_disconnect_events_say_so() -> None:
    assert model.react(model.EVENT_REBOOT, ()) == model.Reaction(refresh=False, reset=True)
    gone = model.react(model.EVENT_AGENT_LIFECYCLE, (model.AGENT_DISCONNECTED, 2))
    assert (gone.qga_gone, gone.ask_guest, gone.reset) == (True, False, False)
    assert not model.react(model.EVENT_AGENT_LIFECYCLE, (model.AGENT_CONNECTED, 2)).qga_gone


class _Inventory:
    def __init__(self) -> None:
        self.mappings: list[dict[str, Any]] = []

    def guest_mapping(self, vm_id: str, source: str, mapping: dict[str, Any]) -> None:
        self.mappings.append(mapping)


async def test_a_guest_info_answer_asked_for_before_a_reset_is_dropped() -> None:
    pytest.importorskip("libvirt")
    from diskname.host.hypervisors.libvirt_guest import GuestInfoPoller
    from diskname.host.hypervisors.libvirt_xml import Domain

    asked = asyncio.Event()
    answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def call(fn: Any, *args: Any) -> Any:
        asked.set()
        return await answer

    class Handle:
        guestInfo = None

    inventory = _Inventory()
    poller = GuestInfoPoller("v1", Handle(), call, inventory, 30.0)  # type: ignore[arg-type]
    poller.domain = Domain(uuid="v1", name="web", disks=(), agent=None, qemu_ga=True)
    ask = asyncio.create_task(poller._ask())
    await asked.wait()
    poller.reset()  # the guest rebooted while libvirt was answering
    answer.set_result({"disk.count": 0})
    await ask
    assert inventory.mappings == []
    answer = asyncio.get_running_loop().create_future()
    answer.set_result({"disk.count": 0})
    await poller._ask()  # asked after the reset: of the new boot
    assert inventory.mappings == [{}]
