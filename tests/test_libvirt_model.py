"""The libvirt backend's pure decisions: ids, devices, events, guest info, asking times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.host.hypervisors import libvirt_model as model
from diskname.host.hypervisors.libvirt_xml import parse_domain
from diskname.protocol.errors import RemoteProtocolError

LIVE = parse_domain((Path(__file__).parent / "data" / "libvirt-live-domain.xml").read_text())
VM = LIVE.uuid


def _disk(target: str) -> Any:
    return next(d for d in LIVE.disks if d.target == target)


def test_a_disk_diskname_plugged_keeps_its_disk_id_from_the_alias() -> None:
    device = model.device_of(VM, _disk("vdb")).to_json()
    assert device["diskId"] == "1a2b3c4d-5e6f-4a8b-9c0d-111111111111"
    assert device["serial"] == "1a2b3c4d-5e6f-4a8b-9"
    assert (device["iface"], device["address"], device["plugged"]) == (
        "virtio", "0000:05:00.0", True,
    )  # fmt: skip
    assert device["deviceId"] == model.device_id(VM, device["diskId"])


def test_other_disks_get_stable_derived_ids_and_keep_their_serial() -> None:
    root = model.device_of(VM, _disk("vda")).to_json()
    assert root["serial"] == "rootserial0123456789"
    assert root == model.device_of(VM, _disk("vda")).to_json()  # same XML, same ids
    other_vm = model.device_of("00000000-0000-4000-8000-000000000000", _disk("vda")).to_json()
    assert other_vm["diskId"] != root["diskId"]
    assert len({d.disk_id for d in model.devices_of(LIVE)}) == len(LIVE.disks)
    assert model.find_disk(LIVE, root["diskId"]) == _disk("vda")
    assert model.find_disk(LIVE, "1a2b3c4d-5e6f-4a8b-9c0d-111111111111") == _disk("vdb")


def test_domain_states_read_as_vm_statuses() -> None:
    assert [model.status_of(s) for s in (1, 3, 5, 42)] == ["Up", "Paused", "Down", "Unknown"]


def test_events_say_what_to_do() -> None:
    assert model.react(model.EVENT_LIFECYCLE, (5, 1)) == model.Reaction()
    assert model.react(model.EVENT_DEVICE_ADDED, ("virtio-disk2",)).refresh
    removed = model.react(model.EVENT_DEVICE_REMOVED, ("ua-x",))
    assert (removed.refresh, removed.removed_alias) == (True, "ua-x")
    assert model.react(model.EVENT_DEVICE_REMOVAL_FAILED, ("ua-x",)).removal_failed_alias == "ua-x"
    agent_up = model.react(model.EVENT_AGENT_LIFECYCLE, (model.AGENT_CONNECTED, 2))
    assert (agent_up.refresh, agent_up.ask_guest) == (False, True)
    assert not model.react(model.EVENT_AGENT_LIFECYCLE, (2, 0)).ask_guest


# What libvirt 9.0 answered for the test guest (virsh guestinfo --disk), plus a partition.
GUEST_INFO: dict[str, Any] = {
    "disk.count": 4,
    "disk.0.name": "/dev/vda", "disk.0.partition": False,
    "disk.0.serial": "rootserial0123456789", "disk.0.alias": "vda",
    "disk.1.name": "/dev/sda", "disk.1.partition": False,
    "disk.1.serial": "0QEMU_QEMU_HARDDISK_2a2b3c4d-5e6f-7a8b-9", "disk.1.alias": "sda",
    "disk.2.name": "/dev/vdc", "disk.2.partition": False, "disk.2.alias": "vdc",
    "disk.3.name": "/dev/vda1", "disk.3.partition": True,
    "disk.3.dependency.count": 1, "disk.3.dependency.0.name": "/dev/vda",
}  # fmt: skip


def test_guest_info_becomes_the_mapping_qemu_ga_gives() -> None:
    mapping = model.mapping_from_guest_info(GUEST_INFO, LIVE)
    root = mapping["rootserial0123456789"]
    assert (root["name"], root["source"]) == ("/dev/vda", "qemu-ga")
    assert root["address"] == "0000:04:00.0"
    assert root["partitions"] == ["/dev/vda1"]
    scsi = mapping["0QEMU_QEMU_HARDDISK_2a2b3c4d-5e6f-7a8b-9"]
    assert (scsi["name"], scsi["bus"], scsi["address"]) == ("/dev/sda", "scsi", {"scsi": "0:0:0:0"})
    # No serial in the guest (no udev there): libvirt's alias still says which disk it
    # is, so the entry carries that disk's address and the engine matches it (SPEC §2).
    assert mapping["address:0000:06:00.0"]["name"] == "/dev/vdc"
    assert model.device_of(VM, _disk("vdc")).address == "0000:06:00.0"
    assert len(mapping) == 3


def test_bad_guest_info_is_dropped_not_a_crash() -> None:
    assert model.mapping_from_guest_info({"disk.count": "many"}, LIVE) == {}
    assert model.mapping_from_guest_info({"disk.count": -3}, LIVE) == {}
    with pytest.raises(RemoteProtocolError):
        model.mapping_from_guest_info({"disk.count": 1, "disk.0.name": 7}, LIVE)
    # A count beyond any VM is cut, not looped over.
    assert model.guest_disks({"disk.count": 10**9}, LIVE)[-1]["name"] is None
    assert len(model.guest_disks({"disk.count": 10**9}, LIVE)) == model.MAX_GUEST_DISKS


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text(max_size=20))


@given(st.dictionaries(st.sampled_from(sorted(GUEST_INFO)), _values, max_size=12))
def test_any_guest_info_is_a_mapping_or_a_protocol_error(params: dict[str, Any]) -> None:
    try:
        mapping = model.mapping_from_guest_info(params, LIVE)
    except RemoteProtocolError:
        return
    assert all(entry["source"] == "qemu-ga" for entry in mapping.values())


def test_the_schedule_asks_at_once_after_a_poke_then_while_the_guest_settles() -> None:
    schedule = model.Schedule(interval=30.0, rechecks=(0.5, 2.0))
    assert schedule.next_due() == 0.0  # never asked: ask now
    schedule.asked(100.0)
    assert schedule.next_due() == 130.0
    schedule.poke(110.0)
    assert schedule.next_due() == 110.0
    schedule.asked(110.0)
    assert schedule.next_due() == 110.5
    schedule.asked(110.6)
    assert schedule.next_due() == 112.0
    schedule.asked(112.0)
    assert schedule.next_due() == 142.0


def test_only_what_changed_is_reported() -> None:
    running = model.seen(LIVE, 1)
    assert LIVE.agent is not None and running.channel == LIVE.agent.path
    assert model.report_kind(None, running) == "found"
    assert model.report_kind(running, model.seen(LIVE, 1)) is None
    fewer = model.Seen(running.name, running.status, running.channel, running.devices[1:])
    assert model.report_kind(running, fewer) == "devices"
    stopped = model.seen(LIVE, 5)
    assert (stopped.status, stopped.channel) == ("Down", None)  # no guest, no channel
    assert model.report_kind(running, stopped) == "found"
