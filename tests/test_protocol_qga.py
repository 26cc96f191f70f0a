"""The qemu-ga wire and its replies to mappings, without sockets."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diskname.host.vm import AGENT, QEMU_GA, VmState, state_from_definition
from diskname.protocol import qga
from diskname.protocol.errors import RemoteProtocolError
from diskname.protocol.lines import NEED_DATA


def events(conn: qga.QgaConnection) -> list[qga.Event]:
    out = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
    return out


def test_sync_drops_everything_before_the_sentinel_and_stale_replies() -> None:
    conn = qga.QgaConnection()
    sent = conn.sync(42)
    assert sent.startswith(b"\xff")
    assert orjson.loads(sent[1:]) == {"execute": "guest-sync-delimited", "arguments": {"id": 42}}
    # An earlier client's half-read reply, the sentinel, a stale reply, then ours.
    stream = b'{"return": [1, 2' + b"\xff" + b'{"return": 7}\n{"return": 42}\n{"return": []}\n'
    for i in range(len(stream)):  # byte by byte
        conn.receive_data(stream[i : i + 1])
    assert events(conn) == [qga.Synced(42), qga.Return([])]


def test_nothing_counts_before_the_sentinel() -> None:
    conn = qga.QgaConnection()
    conn.sync(5)
    conn.receive_data(b'{"return": 5}\n')  # no sentinel yet: not our answer
    assert events(conn) == []
    conn.receive_data(b'\xff{"return": 5}\n{"error": {"class": "CommandNotFound", "desc": "x"}}\n')
    assert events(conn) == [qga.Synced(5), qga.Error("CommandNotFound", "x")]


@pytest.mark.parametrize(
    ("line", "reason"),
    [(b"{nope\n", "invalid_json"), (b"[1]\n", "bad_reply"), (b'{"ok": 1}\n', "bad_reply")],
)
def test_a_bad_reply_raises_and_the_next_one_is_read(line: bytes, reason: str) -> None:
    conn = qga.QgaConnection()
    conn.sync(1)
    conn.receive_data(b'\xff{"return": 1}\n' + line + b'{"return": 2}\n')
    assert conn.next_event() == qga.Synced(1)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reason == reason
    assert conn.next_event() == qga.Return(2)


def test_an_endless_reply_is_cut_at_the_line_cap() -> None:
    conn = qga.QgaConnection(max_line=100)
    conn.sync(1)
    conn.receive_data(b'\xff{"return": 1}\n' + b"x" * 1000)
    assert conn.next_event() == qga.Synced(1)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reason == "oversized"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_escape_as_anything_but_protocol_errors(data: bytes, size: int) -> None:
    conn = qga.QgaConnection(max_line=512)
    conn.sync(9)
    for pos in range(0, len(data), size):
        conn.receive_data(data[pos : pos + size])
        while True:
            try:
                if conn.next_event() is NEED_DATA:
                    break
            except RemoteProtocolError:
                continue


def pci(slot: int) -> dict[str, int]:
    return {"domain": 0, "bus": 0, "slot": slot, "function": 0}


DISKS: list[dict[str, Any]] = [
    {
        "name": "/dev/vda",
        "partition": False,
        "dependencies": [],
        "address": {
            "bus-type": "virtio",
            "pci-controller": pci(2),
            "bus": 0,
            "target": 0,
            "unit": 0,
            "dev": "/dev/vda",
        },
    },
    {"name": "/dev/vda1", "partition": True, "dependencies": ["/dev/vda"]},
    {
        "name": "/dev/sdb",
        "partition": False,
        "address": {
            "bus-type": "scsi",
            "pci-controller": pci(4),
            "bus": 0,
            "target": 0,
            "unit": 3,
            "serial": "0QEMU_QEMU_HARDDISK_4f2a9c1e-0000-4000-8",
        },
    },
    {"name": "/dev/sdb2", "partition": True, "dependencies": ["/dev/sdb"]},
    {"name": "/dev/dm-0", "partition": False, "dependencies": ["/dev/sdb2"]},
    {
        "name": "/dev/nvme0n1",
        "partition": False,
        "address": {"bus-type": "nvme", "pci-controller": pci(6), "serial": "NVME-SERIAL   "},
    },
    {"name": "/dev/nvme0n1p1", "partition": True, "dependencies": ["/dev/nvme0n1"]},
    {"name": "/dev/loop0", "partition": False, "dependencies": []},
]


def test_guest_get_disks_becomes_a_mapping_of_whole_disks() -> None:
    assert qga.mapping_from_disks(DISKS) == {
        "address:0000:00:02.0": {
            "name": "/dev/vda",
            "source": "qemu-ga",
            "bus": "virtio",
            "address": "0000:00:02.0",
            "partitions": ["/dev/vda1"],
        },
        "0QEMU_QEMU_HARDDISK_4f2a9c1e-0000-4000-8": {
            "name": "/dev/sdb",
            "source": "qemu-ga",
            "serial": "0QEMU_QEMU_HARDDISK_4f2a9c1e-0000-4000-8",
            "bus": "scsi",
            "address": {"scsi": "0:0:0:3", "pci": "0000:00:04.0"},
            "partitions": ["/dev/sdb2"],
            "holders": ["/dev/dm-0"],
        },
        "NVME-SERIAL": {
            "name": "/dev/nvme0n1",
            "source": "qemu-ga",
            "serial": "NVME-SERIAL",
            "bus": "nvme",
            "address": "0000:00:06.0",
            "partitions": ["/dev/nvme0n1p1"],
        },
    }


def test_the_mapping_does_not_depend_on_the_guests_order() -> None:
    assert qga.mapping_from_disks(list(reversed(DISKS))) == qga.mapping_from_disks(DISKS)


FSINFO = [
    {
        "name": "sda1",
        "mountpoint": "/",
        "type": "ext4",
        "disk": [{"bus-type": "scsi", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/sda1"}],
    },
    {
        "name": "nvme0n1p2",
        "mountpoint": "/srv",
        "type": "xfs",
        "disk": [{"bus-type": "nvme", "pci-controller": pci(6), "dev": "/dev/nvme0n1p2"}],
    },
    {
        "name": "nvme0n1p3",
        "mountpoint": "/var",
        "type": "xfs",
        "disk": [{"bus-type": "nvme", "pci-controller": pci(6), "dev": "/dev/nvme0n1p3"}],
    },
    {"name": "vdc", "mountpoint": "/data", "type": "ext4", "disk": [{"bus-type": "virtio"}]},
]


def test_guest_get_fsinfo_maps_partitions_to_their_disk_nvme_included() -> None:
    assert qga.mapping_from_fsinfo(FSINFO) == {
        "address:0:0:0:0": {
            "name": "/dev/sda",
            "source": "qemu-ga",
            "bus": "scsi",
            "address": {"scsi": "0:0:0:0"},
            "mountpoints": ["/"],
            "partitions": ["/dev/sda1"],
        },
        "address:0000:00:06.0": {
            "name": "/dev/nvme0n1",
            "source": "qemu-ga",
            "bus": "nvme",
            "address": "0000:00:06.0",
            "mountpoints": ["/srv", "/var"],
            "partitions": ["/dev/nvme0n1p2", "/dev/nvme0n1p3"],
        },
    }


@pytest.mark.parametrize(
    ("name", "disk"),
    [
        ("/dev/sda1", "/dev/sda"),
        ("/dev/vdab12", "/dev/vdab"),
        ("/dev/nvme0n1p2", "/dev/nvme0n1"),
        ("/dev/nvme0n1", "/dev/nvme0n1"),
        ("/dev/nvme10n2", "/dev/nvme10n2"),
        ("/dev/mmcblk0p1", "/dev/mmcblk0"),
        ("/dev/xvda3", "/dev/xvda"),
        ("/dev/vdb", "/dev/vdb"),
    ],
)
def test_partitions_belong_to_their_disk(name: str, disk: str) -> None:
    assert qga.disk_of(name) == disk


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ({"name": "/dev/vda"}, "bad_reply"),
        ([{"name": 5}], "bad_reply"),
        ([1, 2], "bad_reply"),
        ([{"name": f"/dev/vd{i}", "partition": False} for i in range(5000)], "too_many_entries"),
    ],
)
def test_hostile_replies_are_refused(reply: Any, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        qga.mapping_from_disks(reply)
    assert info.value.reason == reason


def test_a_name_too_long_costs_only_its_own_entry() -> None:
    refused: Counter[str] = Counter()
    reply = [{"name": n, "partition": False} for n in ("/dev/" + "v" * 10_000, "/dev/vda")]
    assert qga.mapping_from_disks(reply, refused=refused) == {
        "name:/dev/vda": {"name": "/dev/vda", "source": "qemu-ga"}
    }
    assert refused == {"too_long": 1}


def test_the_agent_wins_over_qemu_ga_and_the_order_of_reports_does_not_matter() -> None:
    agent = {"4f2a9c1e-0000-4000-8": {"name": "/dev/vdb"}}
    from_qga = {
        "0000:00:05.0": {"name": "/dev/vdb", "source": "qemu-ga"},
        "0000:00:02.0": {"name": "/dev/vda", "source": "qemu-ga"},
    }
    empty = VmState.new("a", "a")
    one = empty.with_source(AGENT, agent).with_source(QEMU_GA, from_qga)
    two = empty.with_source(QEMU_GA, from_qga).with_source(AGENT, agent)
    assert one.mapping == two.mapping == {**agent, "0000:00:02.0": from_qga["0000:00:02.0"]}
    assert one.hash == two.hash
    # The same report again changes nothing, from either source.
    assert one.with_source(QEMU_GA, from_qga) == one
    assert one.with_source(AGENT, agent) == one
    restored = state_from_definition(orjson.loads(orjson.dumps(one.to_definition())))
    assert restored.hash == one.hash
    assert restored.with_source(QEMU_GA, from_qga).hash == restored.hash
