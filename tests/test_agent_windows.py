"""The agent's Windows source on Linux: the WMI parser, the source's processes, the port threads.

The recorded answer (tests/data/windows/wmi-disks.json, see its README) holds
the disks of tests/test_host_qga_windows.py as WMI shows them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from diskname.agent.records import DeviceRecord, build_mapping, mapping_json
from diskname.agent.sources.windows.port import ThreadedLink
from diskname.agent.sources.windows.query import WindowsSource
from diskname.agent.sources.windows.wmi import pci_of, records_from_cim
from diskname.protocol import agent_wire as aw

from .conftest import wait_until

DATA = Path(__file__).parent / "data" / "windows"
VOLUME_C = "\\\\?\\Volume{6b1c2d1e-0000-0000-0000-100000000000}\\"
VOLUME_RESERVED = "\\\\?\\Volume{6b1c2d1e-0000-0000-0000-007e00000000}\\"
VOLUME_D = "\\\\?\\Volume{0c3f6e2a-9b1d-4c55-8f0e-3a5b7c9d1e2f}\\"
VOLUME_E = "\\\\?\\Volume{5d8e1f40-2a6b-4c7d-9e0f-1a2b3c4d5e6f}\\"
GIB = 1 << 30


def answer() -> Any:
    return json.loads((DATA / "wmi-disks.json").read_text())["answer"]


def drive(n: int) -> str:
    return f"\\\\.\\PHYSICALDRIVE{n}"


WINDOWS = [
    DeviceRecord(
        name=drive(0),
        serial="1a2b3c4d-5e6f-7a8b-9",
        bus="virtio",
        address="0000:00:05.0",
        size=64 * GIB,
        mountpoints=tuple(sorted(["C:\\", VOLUME_C, VOLUME_RESERVED])),
    ),
    DeviceRecord(
        name=drive(1),
        serial="2b3c4d5e-6f7a-8b9c-a",
        bus="virtio",
        address="0000:00:06.0",
        size=GIB,
        mountpoints=tuple(sorted(["D:\\", VOLUME_D])),
    ),
    DeviceRecord(
        name=drive(2),
        serial="3c4d5e6f-7a8b-9c0d-1",
        bus="sata",
        address="0000:00:1f.2",
        scsi_address="0:0:0:0",
        size=GIB,
        mountpoints=tuple(sorted(["E:\\", VOLUME_E])),
    ),
    DeviceRecord(
        name=drive(3),
        bus="virtio_scsi",
        address="0000:00:07.0",
        scsi_address="0:0:0:0",
        size=GIB,
    ),  # serial "0"
    DeviceRecord(name=drive(4), bus="virtio", address="0000:00:08.0", size=GIB),  # "0"
]


def test_the_recorded_wmi_answer_becomes_device_records() -> None:
    assert records_from_cim(answer()) == WINDOWS


def linux_records() -> list[DeviceRecord]:
    """The same five disks as the Linux udev source reports them (FACTS §2), on SCSI host 0.

    Disks 3 and 4 have no serial here either, so both agents fall back to the address.
    """
    return [
        DeviceRecord(
            name="/dev/vda",
            serial="1a2b3c4d-5e6f-7a8b-9",
            bus="virtio",
            address="0000:00:05.0",
            diskseq=1,
            by_id=("/dev/disk/by-id/virtio-1a2b3c4d-5e6f-7a8b-9",),
            by_path="/dev/disk/by-path/pci-0000:00:05.0",
            size=64 * GIB,
            partitions=("/dev/vda1",),
            mountpoints=("/",),
        ),
        DeviceRecord(
            name="/dev/vdb",
            serial="2b3c4d5e-6f7a-8b9c-a",
            bus="virtio",
            address="0000:00:06.0",
            size=GIB,
            mountpoints=("/data",),
        ),
        DeviceRecord(
            name="/dev/sda",
            serial="3c4d5e6f-7a8b-9c0d-1",
            bus="sata",
            address="0000:00:1f.2",
            scsi_address="0:0:0:0",
            size=GIB,
        ),
        DeviceRecord(
            name="/dev/sdb",
            bus="virtio_scsi",
            address="0000:00:07.0",
            scsi_address="0:0:0:0",
            size=GIB,
        ),
        DeviceRecord(name="/dev/vdc", bus="virtio", address="0000:00:08.0", size=GIB),
    ]


def message(records: list[DeviceRecord]) -> dict[str, Any]:
    usage = aw.DisksUsage(mapping=build_mapping(records))
    return json.loads(aw.encode_message(usage))  # type: ignore[no-any-return]


# What only one OS has: Linux's by-id/by-path links, diskseq and partition nodes.
LINUX_ONLY = ("by_id", "by_path", "diskseq", "partitions")


def test_windows_and_linux_agents_send_the_same_message_for_the_same_disks() -> None:
    windows, linux = message(records_from_cim(answer())), message(linux_records())
    assert windows.keys() == linux.keys() == {"__name__", "disks", "mapping"}
    assert windows["mapping"].keys() == linux["mapping"].keys()
    names = {}
    for key, entry in linux["mapping"].items():
        other = windows["mapping"][key]
        names[entry["name"]] = other["name"]
        common = {k: v for k, v in entry.items() if k not in (*LINUX_ONLY, "name", "mountpoints")}
        assert {k: v for k, v in other.items() if k not in ("name", "mountpoints")} == common
    assert names == {
        "/dev/vda": drive(0),
        "/dev/vdb": drive(1),
        "/dev/sda": drive(2),
        "/dev/sdb": drive(3),
        "/dev/vdc": drive(4),
    }
    assert windows["mapping"]["2b3c4d5e-6f7a-8b9c-a"]["mountpoints"] == sorted(["D:\\", VOLUME_D])


def test_serials_windows_spoils_are_cleaned() -> None:
    keys = list(mapping_json(build_mapping(records_from_cim(answer()))))
    # Trailing spaces and a NUL trimmed; two disks reporting "0" each under its address.
    assert sorted(keys) == sorted(
        [
            "1a2b3c4d-5e6f-7a8b-9",
            "2b3c4d5e-6f7a-8b9c-a",
            "3c4d5e6f-7a8b-9c0d-1",
            "address:0:0:0:0",
            "address:0000:00:08.0",
        ]
    )


def test_convert_to_json_lone_objects_and_nulls_are_lists() -> None:
    raw = answer()
    raw["disks"], raw["sizes"], raw["partitions"] = raw["disks"][1], None, raw["partitions"][3]
    (record,) = records_from_cim(raw)
    assert record.name == drive(1) and record.mountpoints == tuple(sorted(["D:\\", VOLUME_D]))
    assert record.size == answer()["disks"][1]["Size"]  # Win32_DiskDrive's, rounded to cylinders


def test_shared_serials_and_hostile_names_are_dropped() -> None:
    raw = answer()
    raw["disks"][0]["SerialNumber"] = raw["disks"][1]["SerialNumber"] = "QM00001"
    raw["disks"][2]["DeviceID"] = "\\\\?\\GLOBALROOT\\Device\\Harddisk2\\DR2"
    raw["partitions"].append(
        {"DiskNumber": 1, "AccessPaths": ["D:\\..\\", "\\\\?\\GLOBALROOT\\x\\"]}
    )
    records = records_from_cim(raw)
    assert [r.name for r in records] == [drive(0), drive(1), drive(3), drive(4)]
    assert records[0].serial is None and records[1].serial is None
    assert records[1].mountpoints == tuple(sorted(["D:\\", VOLUME_D]))


def test_pci_locations() -> None:
    assert pci_of("PCI bus 0, device 31, function 2") == "0000:00:1f.2"
    assert pci_of("PCI bus 1, device 99, function 0") is None
    assert pci_of("Integrated : Adapter 0") is None and pci_of(None) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=6)
    ),
    max_leaves=30,
)
disk_like = st.fixed_dictionaries(
    {"Index": json_values | st.integers(0, 9), "DeviceID": st.sampled_from([drive(1), "x"])},
    optional={
        k: json_values for k in ("SerialNumber", "Parent", "ParentLocation", "SCSIBus", "Size")
    },
)


@given(json_values, st.lists(disk_like, max_size=4), json_values)
def test_no_answer_makes_the_parser_fail(junk: Any, disks: list[Any], parts: Any) -> None:
    for raw in (junk, {"disks": disks, "sizes": junk, "partitions": parts}):
        for record in records_from_cim(raw):
            assert record.name == drive(1)


# -- the source's processes, with a stand-in for powershell.exe ---------------

FAKE_POWERSHELL = textwrap.dedent(
    """
    import base64, os, socket, sys
    script = base64.b64decode(sys.argv[sys.argv.index("-EncodedCommand") + 1]).decode("utf-16-le")
    if "Register-CimIndicationEvent" in script:
        print("ready", flush=True)
        with socket.create_connection(("127.0.0.1", int(os.environ["FAKE_WATCH_PORT"]))) as s:
            for line in s.makefile("rb"):
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
    else:
        with open(os.environ["FAKE_CIM_ANSWER"], "rb") as f:
            sys.stdout.buffer.write(f.read())
    """
)


async def test_the_source_rescans_when_the_watcher_says_a_device_changed(
    tmp_path: Path, monkeypatch: Any
) -> None:
    answer_file = tmp_path / "answer.json"
    answer_file.write_text(json.dumps(answer()))
    fake = tmp_path / "powershell.py"
    fake.write_text(FAKE_POWERSHELL)
    watchers: list[asyncio.StreamWriter] = []
    server = await asyncio.start_server(lambda _r, w: watchers.append(w), "127.0.0.1", 0)
    monkeypatch.setenv("FAKE_WATCH_PORT", str(server.sockets[0].getsockname()[1]))
    monkeypatch.setenv("FAKE_CIM_ANSWER", str(answer_file))
    source = WindowsSource(powershell=[sys.executable, str(fake)], rescan=3600)
    try:
        await source.start()
        assert source.snapshot() == WINDOWS
        await wait_until(lambda: watchers, timeout=10)
        unplugged = answer()
        del unplugged["disks"][1]
        answer_file.write_text(json.dumps(unplugged))
        watchers[0].write(b"changed\n")
        await asyncio.wait_for(source.wait_changed(), 10)
        assert [r.name for r in source.snapshot()] == [drive(n) for n in (0, 2, 3, 4)]
        assert source.queries == 2
    finally:
        await source.close()
        server.close()
        for writer in watchers:
            writer.close()
        await server.wait_closed()


# -- the port threads, over a socket pair standing in for the handle ----------


class SocketPort:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def read(self, size: int) -> bytes:
        try:
            return self.sock.recv(size)
        except OSError:
            return b""

    def write(self, data: bytes) -> int:
        return self.sock.send(data)

    def cancel(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()
        self.closed = True


async def test_the_threaded_link_carries_both_ways_and_ends_cleanly() -> None:
    ours, host = socket.socketpair()
    port = SocketPort(ours)
    link = ThreadedLink(port, asyncio.get_running_loop())
    host_reader, host_writer = await asyncio.open_connection(sock=host)
    try:
        link.write(aw.encode_message(aw.Heartbeat()))
        assert await asyncio.wait_for(host_reader.readline(), 10) == aw.encode_message(
            aw.Heartbeat()
        )
        host_writer.write(aw.encode_message(aw.Refresh()))
        line = await asyncio.wait_for(link.reader.readline(), 10)
        assert aw.decode_message(line.rstrip(b"\n")) == aw.Refresh()
        host_writer.close()  # the host goes away: the link ends, the reader sees EOF
        assert await asyncio.wait_for(link.reader.read(), 10) == b""
        await wait_until(link.is_closing, timeout=10)
    finally:
        link.close()
        await asyncio.wait_for(link.wait_closed(), 10)
    assert port.closed
