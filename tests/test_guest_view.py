"""Issue 21: the guest's whole view of a disk (SPEC §17), from the parser to REST.

The grammar alone (and fuzzed), qemu-ga's mountpoints, the engine's own check
behind a lying host, then a dev cluster (engine, sim host, sim guests running
the real agent) on real sockets and real PostgreSQL: what the agent reported
is what ``attachment.guest`` serves, hostile values are dropped and counted,
the view's changes are events that a reconnecting stream is sent again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.engine.core.matching import VmDisk, match_names
from diskname.protocol import qga
from diskname.protocol.disks import DEFAULT_DISK_SIZE
from diskname.protocol.guest_view import (
    VIEW_FIELDS,
    clean_entry,
    guest_view,
    valid_by_id,
    valid_by_path,
    valid_holder,
    valid_mountpoint,
)
from diskname.protocol.simhw import GuestLayout, HardwareState, decode_state, encode_state

from .conftest import wait_until
from .devcluster import Dev, dev
from .test_engine_monitor import DISK, rig

pytestmark = pytest.mark.timeout(90)

GUID = "\\\\?\\Volume{0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9}\\"
GOOD_MOUNTS = ["/", "/data", "/srv/my data", "D:\\", "D:\\Shares\\Team\\", GUID]
BAD_MOUNTS = [
    "data",  # not absolute
    "/srv/../etc",
    "/x/./y",
    "/a//b",
    "/evil\x1b[31m",
    "/<script>",
    "/" + "a" * 300,
    "C:\\..\\Windows\\",
    "\\\\.\\C:",
    "",
    7,
    None,
]


# -- the grammar -----------------------------------------------------------------


def test_each_field_keeps_what_passes_and_counts_the_rest() -> None:
    entry = {
        "name": "/dev/vdb",
        "serial": "abc",
        "by_id": ["/dev/disk/by-id/virtio-abc", "/dev/disk/by-id/../../sda", "/dev/vdb"],
        "by_path": "/dev/disk/by-path/pci-0000:00:05.0",
        "size": -1,
        "partitions": ["/dev/vdb2", "/dev/vdb1", "/dev/vdb1", "vdb3"],
        "holders": ["dm-0", "/dev/mapper/vg-data", "../dm-1", "<b>"],
        "mountpoints": GOOD_MOUNTS + BAD_MOUNTS,
    }
    cleaned, dropped = clean_entry(entry)
    assert cleaned == {
        "name": "/dev/vdb",
        "serial": "abc",
        "by_id": ["/dev/disk/by-id/virtio-abc"],
        "by_path": "/dev/disk/by-path/pci-0000:00:05.0",
        "partitions": ["/dev/vdb1", "/dev/vdb2"],
        "holders": ["/dev/mapper/vg-data", "dm-0"],
        "mountpoints": sorted(GOOD_MOUNTS),
    }
    assert dropped == Counter(
        bad_by_id=2, bad_size=1, bad_partition=1, bad_holder=2, bad_mountpoint=len(BAD_MOUNTS)
    )


def test_in_use_when_mounted_or_held_and_absent_keys_stay_absent() -> None:
    assert guest_view({"name": "/dev/vdb", "size": 5})[0] == {"size": 5, "in_use": False}
    assert guest_view({"mountpoints": ["/data"]})[0]["in_use"] is True
    assert guest_view({"holders": ["dm-0"]})[0]["in_use"] is True
    assert guest_view({"partitions": ["/dev/vdb1"]})[0]["in_use"] is False
    # A mountpoint that does not pass is as if not reported: not in use by it.
    view, dropped = guest_view({"mountpoints": ["/bad\x00"]})
    assert view == {"in_use": False} and dropped == Counter(bad_mountpoint=1)


def test_windows_mountpoints_pass_and_other_windows_paths_do_not() -> None:
    view, dropped = guest_view({"mountpoints": ["D:\\", GUID, "E:\\Data\\", "\\\\.\\E:", "E:"]})
    assert view["mountpoints"] == sorted(["D:\\", GUID, "E:\\Data\\"])
    assert view["in_use"] is True and dropped == Counter(bad_mountpoint=2)


_RULES = {
    "by_id": valid_by_id,
    "partitions": lambda v: isinstance(v, str) and v.startswith("/dev/"),
    "holders": valid_holder,
    "mountpoints": valid_mountpoint,
}
_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from([*GOOD_MOUNTS, "/dev/disk/by-id/x", "/dev/vdb1", "dm-0"]),
    st.integers(),
    st.none(),
    st.booleans(),
)


@given(
    st.dictionaries(
        st.sampled_from([*VIEW_FIELDS, "name", "other"]),
        st.one_of(_values, st.lists(_values, max_size=8)),
    )
)
def test_any_entry_is_cleaned_without_raising(entry: dict[str, Any]) -> None:
    cleaned, dropped = clean_entry(entry)
    for key, rule in _RULES.items():
        assert all(rule(v) for v in cleaned.get(key, []))
        assert cleaned.get(key, [None]) != []  # an emptied list is left out
    if "by_path" in cleaned:
        assert valid_by_path(cleaned["by_path"])
    if "size" in cleaned:
        assert isinstance(cleaned["size"], int) and cleaned["size"] >= 0
    assert cleaned.get("name") == entry.get("name") and cleaned.get("other") == entry.get("other")
    assert all(n > 0 for n in dropped.values())
    # Cleaning is idempotent: what passed once passes again, and nothing more is dropped.
    assert clean_entry(cleaned) == (cleaned, Counter())


def test_qemu_ga_fsinfo_gives_linux_disks_their_mountpoints() -> None:
    disks = [
        {"name": "/dev/vdb", "partition": False, "address": {"serial": "s1"}},
        {"name": "/dev/vdb1", "partition": True, "dependencies": ["/dev/vdb"]},
        {"name": "/dev/dm-0", "partition": False, "dependencies": ["/dev/vdb1"]},
    ]
    fsinfo = [
        {"mountpoint": "/data", "disk": [{"dev": "/dev/vdb1"}]},
        {"mountpoint": "/", "disk": [{"dev": "/dev/vda1"}]},  # a disk not in the answer
        {"mountpoint": 7, "disk": [{"dev": "/dev/vdb"}]},
        "junk",
    ]
    entry = qga.mapping_from_disks(disks, fsinfo=fsinfo)["s1"]
    assert entry["partitions"] == ["/dev/vdb1"] and entry["holders"] == ["/dev/dm-0"]
    assert entry["mountpoints"] == ["/data"]


def test_the_sim_hardware_state_carries_sizes_and_layouts() -> None:
    line = b'{"disks": [{"deviceId": "d", "serial": "s", "iface": "virtio"}]}'
    assert decode_state(line).disks[0].size == DEFAULT_DISK_SIZE  # an older host's line
    state = decode_state(line)
    layout = GuestLayout(2, ("/data",), ("dm-0",))
    again = decode_state(encode_state(HardwareState(state.disks, {"d": layout})))
    assert again.layouts == {"d": layout}


# -- the engine checks again: a host is not trusted with the view either ------------


def test_matching_checks_the_view_of_what_it_names() -> None:
    disk = VmDisk("1a2b3c4d-5e6f-4a8b-9c0d-112233445566", "1a2b3c4d-5e6f-4a8b-9")
    mapping = {disk.serial: {"name": "/dev/vdb", "mountpoints": ["/ok", "/x/../y"], "size": 1}}
    result = match_names([disk], mapping)
    assert result.guests[disk.disk_id] == {"mountpoints": ["/ok"], "size": 1, "in_use": True}
    assert result.rejected == Counter(bad_mountpoint=1)


async def test_a_lying_host_s_values_are_dropped_and_counted_by_the_engine(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.05) as r:
        r.plug(DISK, "/dev/vdb")
        [key] = r.fake.vms[r.vm_id].mapping
        r.fake.vms[r.vm_id].mapping[key].update(
            by_id=["/dev/disk/by-id/ok", "/dev/disk/by-id/\u202e"],
            mountpoints=["/mnt", "/../etc"],
            holders=["<img src=x>"],
            size="big",
        )
        r.fake.notify(r.vm_id)

        async def guest() -> dict[str, Any] | None:
            att = await r.store.get_attachment(r.vm_id, DISK)
            return dict(att.guest) if att and att.guest else None

        view = await wait_until(guest)
        assert view == {"by_id": ["/dev/disk/by-id/ok"], "mountpoints": ["/mnt"], "in_use": True}
        for reason in ("bad_by_id", "bad_mountpoint", "bad_holder", "bad_size"):
            assert r.metrics.rejected[reason] >= 1, reason


# -- through REST, with sim hosts and sim guests running the real agent -------------


def _layout(d: Dev, vm: str, disk: str, layout: GuestLayout | None) -> None:
    d.cluster.hosts[0].hypervisor.set_guest_layout(vm, disk, layout)  # type: ignore[attr-defined]


async def _guest_when(d: Dev, vm: str, disk: str, test: Any) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        guest = (await d.rest.attachment(vm, disk)).get("guest")
        return guest if guest is not None and test(guest) else None

    view: dict[str, Any] = await wait_until(found, timeout=10)
    return view


async def _host_entry(d: Dev, vm: str, serial: str) -> dict[str, Any]:
    """The agent's entry for the disk, as the host holds it (after the host's checks)."""
    found = d.cluster.hosts[0].registry.find(vm)
    assert found is not None
    [entry] = [e for k, e in found.mapping.items() if k == serial]
    return dict(entry)


async def test_after_a_hot_plug_the_guest_carries_every_field_the_agent_reported(
    pg_dsn: str,
) -> None:
    async with dev(pg_dsn) as d:
        vm = await d.vm()
        disk = await d.rest.hotplug(vm, "virtio")
        await d.rest.wait_name(vm, disk)
        att = await d.rest.attachment(vm, disk)
        serial = att["disk"]["serial"]
        assert serial == disk[:20]
        fresh = await _guest_when(d, vm, disk, lambda g: "by_id" in g)
        assert fresh == {
            "by_id": [f"/dev/disk/by-id/virtio-{serial}"],
            "size": att["disk"]["provisioned_size"],
            "in_use": False,
        }

        # The guest's administrator partitions it, makes an LVM volume and mounts it.
        layout = GuestLayout(2, ("/data", "/srv/backup"), ("/dev/mapper/vg-data",))
        _layout(d, vm, disk, layout)
        view = await _guest_when(d, vm, disk, lambda g: g["in_use"])
        entry = await _host_entry(d, vm, serial)
        for key in ("by_id", "size", "partitions", "holders", "mountpoints"):
            assert view[key] == entry[key], key
        assert view["partitions"] == ["/dev/vdb1", "/dev/vdb2"]
        assert view["mountpoints"] == ["/data", "/srv/backup"]
        listed = (await d.rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"]
        assert [a["guest"] for a in listed if a["id"] == disk] == [view]

        # Unmounted and unplugged: not in use, then no view at all.
        _layout(d, vm, disk, None)
        await _guest_when(d, vm, disk, lambda g: not g["in_use"] and "partitions" not in g)
        await d.rest.ok("PUT", f"/api/vms/{vm}/diskattachments/{disk}", {"active": False})
        await d.rest.wait_unnamed(vm, disk)
        assert (await d.rest.attachment(vm, disk))["guest"] is None


async def test_hostile_values_from_the_guest_are_dropped_and_counted_at_the_host(
    pg_dsn: str,
) -> None:
    async with dev(pg_dsn) as d:
        vm = await d.vm()
        disk = await d.rest.hotplug(vm, "virtio_scsi")
        await d.rest.wait_name(vm, disk)
        bad = ("/evil\x1b]0;owned\x07", "/a/../../etc", "<script>alert(1)</script>")
        _layout(d, vm, disk, GuestLayout(1, ("/data", *bad), ("dm-0", "../../x")))
        view = await _guest_when(d, vm, disk, lambda g: g["in_use"])
        assert view["mountpoints"] == ["/data"] and view["holders"] == ["dm-0"]
        assert view["partitions"] == ["/dev/sda1"]
        vm_state = d.cluster.hosts[0].registry.find(vm)
        assert vm_state is not None
        assert vm_state.rejected["bad_mountpoint"] >= len(bad)
        assert vm_state.rejected["bad_holder"] >= 1


async def _stream(resp: aiohttp.ClientResponse, count: int) -> list[tuple[int, str, Any]]:
    """The next ``count`` events of a stream as (id, type, data)."""
    found: list[tuple[int, str, Any]] = []
    event_id, kind = 0, "message"
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            found.append((event_id, kind, orjson.loads(line[6:])))
            event_id, kind = 0, "message"
            if len(found) == count:
                return found
    raise AssertionError("the stream ended")


async def test_view_changes_are_events_and_a_reconnecting_stream_gets_them(
    pg_dsn: str,
) -> None:
    async with dev(pg_dsn) as d:
        vm = await d.vm()
        root = (await d.atts(vm))[0]["id"]
        await _guest_when(d, vm, root, lambda g: "by_id" in g)  # the boot's events are out
        base = d.cluster.base_url + "/api/events"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as resp:
                disk = await d.rest.hotplug(vm, "virtio")
                events = await asyncio.wait_for(_stream(resp, 2), 10)
            kinds = {kind: (event_id, data) for event_id, kind, data in events}
            name_id, name = kinds["message"]
            guest_id, guest = kinds["guest"]
            assert name["new"] == "/dev/vdb" and name["disk_id"] == disk
            assert guest["kind"] == "guest" and guest["id"] == guest_id != name_id
            assert guest["disk_id"] == disk and guest["vm_id"] == vm
            assert guest["guest"]["by_id"] and guest["guest"]["in_use"] is False

            # Cut off; meanwhile the disk gets mounted. Reconnecting sends that view.
            _layout(d, vm, disk, GuestLayout(1, ("/data",)))
            await _guest_when(d, vm, disk, lambda g: g["in_use"])
            headers = {"Last-Event-ID": str(max(name_id, guest_id))}
            async with http.get(base, headers=headers) as resp:
                [(again_id, kind, again)] = await asyncio.wait_for(_stream(resp, 1), 10)
            assert kind == "guest" and again_id > guest_id
            assert again["guest"]["mountpoints"] == ["/data"] and again["guest"]["in_use"]
