"""The agent's pure parts: records to mapping, the sim kernel's naming, config seams."""

from __future__ import annotations

import pytest

from diskname.agent.records import DeviceRecord, build_mapping, mapping_json
from diskname.agent.service import AgentConfig, make_source
from diskname.agent.sources.base import SourceUnavailable
from diskname.agent.sources.sim import SimKernel, SimSource, disk_letters, guest_serial
from diskname.agent.transport import (
    Backoff,
    Endpoint,
    TransportUnavailable,
    parse_endpoint,
    resolve_endpoint,
)
from diskname.protocol import agent_wire as aw
from diskname.protocol.simhw import HardwareState, VirtualDisk


def test_mapping_is_keyed_by_trimmed_serial_with_present_extensions_only() -> None:
    records = [
        DeviceRecord(name="/dev/nvme0n1", serial="  abc123   ", bus="nvme", diskseq=4),
        DeviceRecord(
            name="/dev/vdb",
            serial="1a2b3c4d-5e6f-7a8b-9",
            bus="virtio",
            address="0000:00:05.0",
            by_id=("/dev/disk/by-id/virtio-1a2b3c4d-5e6f-7a8b-9",),
            partitions=("/dev/vdb1",),
        ),
    ]
    mapping = mapping_json(build_mapping(records))
    assert mapping == {
        "abc123": {"name": "/dev/nvme0n1", "bus": "nvme", "diskseq": 4},
        "1a2b3c4d-5e6f-7a8b-9": {
            "name": "/dev/vdb",
            "bus": "virtio",
            "address": "0000:00:05.0",
            "by_id": ["/dev/disk/by-id/virtio-1a2b3c4d-5e6f-7a8b-9"],
            "partitions": ["/dev/vdb1"],
        },
    }


def test_records_without_a_serial_are_keyed_by_address_then_name() -> None:
    records = [
        DeviceRecord("/dev/vdc", address="0000:00:06.0"),
        DeviceRecord("/dev/sdb", " ", address="0000:00:04.0", scsi_address="2:0:0:1"),
        DeviceRecord("/dev/vdd", "  "),
    ]
    assert mapping_json(build_mapping(records)) == {
        "address:0000:00:06.0": {"name": "/dev/vdc", "address": "0000:00:06.0"},
        "address:2:0:0:1": {
            "name": "/dev/sdb",
            "address": {"pci": "0000:00:04.0", "scsi": "2:0:0:1"},
        },
        "name:/dev/vdd": {"name": "/dev/vdd"},
    }


def test_the_engine_names_a_serial_less_disk_by_its_address() -> None:
    # Only the engine's pure matcher, to pin the seam the address key relies on.
    from diskname.engine.core.matching import VmDisk, match_names

    records = [DeviceRecord("/dev/sdb", address="0000:00:04.0", scsi_address="0:0:0:1")]
    disks = [VmDisk("d1", "1a2b3c4d-5e6f-7a8b-9", address="0:0:0:1")]
    result = match_names(disks, mapping_json(build_mapping(records)))
    assert result.names == {"d1": "/dev/sdb"}
    assert result.sources == {"d1": "address"}


def test_original_agent_keys_match_the_engine() -> None:
    from diskname.engine.core.matching import VmDisk, match_names

    serial = "1a2b3c4d-5e6f-7a8b-9"
    mapping = {f"0QEMU_QEMU_HARDDISK_{serial}": {"name": "/dev/sda"}}
    assert match_names([VmDisk("d1", serial)], mapping).names == {"d1": "/dev/sda"}


def test_a_shared_serial_goes_to_the_first_name() -> None:
    records = [DeviceRecord("/dev/nvme0n2", "S1"), DeviceRecord("/dev/nvme0n1", "S1")]
    assert build_mapping(records)["S1"].name == "/dev/nvme0n1"


def test_the_mapping_survives_the_wire() -> None:
    mapping = build_mapping([DeviceRecord("/dev/sda", "s", bus="sata", diskseq=1)])
    line = aw.encode_message(aw.DisksUsage(mapping=mapping))
    decoded = aw.decode_message(line.rstrip(b"\n"))
    assert isinstance(decoded, aw.DisksUsage)
    assert mapping_json(dict(decoded.mapping)) == mapping_json(mapping)


@pytest.mark.parametrize(
    ("index", "letters"),
    [(0, "a"), (1, "b"), (25, "z"), (26, "aa"), (27, "ab"), (701, "zz"), (702, "aaa")],
)
def test_disk_letters_follow_the_kernel(index: int, letters: str) -> None:
    assert disk_letters(index) == letters


def disk(n: int, iface: str) -> VirtualDisk:
    return VirtualDisk(device_id=f"dev{n}", serial=f"serial{n}", iface=iface, address=f"a{n}")


def test_sim_kernel_names_each_driver_family_with_the_lowest_free_index() -> None:
    kernel = SimKernel()
    names = [
        kernel.plug(disk(n, iface)).name
        for n, iface in enumerate(["virtio", "virtio", "virtio_scsi", "sata", "nvme", "nvme"])
    ]
    assert names == ["/dev/vda", "/dev/vdb", "/dev/sda", "/dev/sdb", "/dev/nvme0n1", "/dev/nvme1n1"]
    kernel.unplug("dev0")
    kernel.unplug("dev2")
    assert kernel.plug(disk(10, "sata")).name == "/dev/sda"
    assert kernel.plug(disk(11, "virtio")).name == "/dev/vda"


def test_sim_kernel_diskseq_grows_on_every_plug_even_a_replug() -> None:
    kernel = SimKernel()
    first = kernel.plug(disk(1, "virtio"))
    kernel.unplug("dev1")
    again = kernel.plug(disk(1, "virtio"))
    assert (first.name, again.name) == ("/dev/vda", "/dev/vda")
    assert first.diskseq is not None and again.diskseq is not None
    assert again.diskseq > first.diskseq
    assert again.bus == "virtio" and again.address == "a1" and again.serial == "serial1"


async def test_at_boot_the_sim_kernel_names_disks_in_address_order() -> None:
    """As a real kernel probes them, not in the order they were once hot-plugged."""
    disks = (
        VirtualDisk("root", "s-root", "virtio", "0000:00:05.0"),
        VirtualDisk("late", "s-late", "virtio", "0000:00:0a.0"),  # plugged second, higher slot
        VirtualDisk("early", "s-early", "virtio", "0000:00:06.0"),
        VirtualDisk("scsi1", "s-scsi1", "virtio_scsi", "0:0:0:1"),
        VirtualDisk("scsi0", "s-scsi0", "virtio_scsi", "0:0:0:0"),
    )
    source = SimSource("unix:/nonexistent")
    source.apply(HardwareState(disks=disks))
    names = {r.serial: r.name for r in source.snapshot()}
    assert names == {
        "s-root": "/dev/vda",
        "s-early": "/dev/vdb",
        "s-late": "/dev/vdc",
        "s-scsi0": "/dev/sda",
        "s-scsi1": "/dev/sdb",
    }
    await source.close()


def test_the_sim_guest_sees_serials_as_the_bus_carries_them() -> None:
    lun = "36001405f1e2d3c4b5a69788776655443"
    assert guest_serial("virtio", lun) == lun[:20]  # virtio-blk: 20 bytes
    assert guest_serial("sata", lun) == lun[:20]
    assert guest_serial("virtio_scsi", lun) == lun
    assert guest_serial("nvme", lun) == lun


def test_parse_endpoint() -> None:
    assert parse_endpoint("unix:/run/x.sock") == Endpoint(kind="unix", path="/run/x.sock")
    assert parse_endpoint("tcp:127.0.0.1:4000") == Endpoint(kind="tcp", host="127.0.0.1", port=4000)
    assert parse_endpoint("tcp:[::1]:4000") == Endpoint(kind="tcp", host="::1", port=4000)
    for bad in ("unix:", "tcp:host", "udp:1.2.3.4:5", "nonsense"):
        with pytest.raises(TransportUnavailable):
            parse_endpoint(bad)


def test_the_transport_is_connect_then_channel_then_the_two_virtio_ports() -> None:
    assert resolve_endpoint("unix:/s", "/dev/x") == Endpoint(kind="unix", path="/s")
    assert resolve_endpoint(None, "/dev/x") == Endpoint(kind="chardev", paths=("/dev/x",))
    assert resolve_endpoint(None, None).paths == (
        "/dev/virtio-ports/ovirt-guest-agent.0",
        "/dev/virtio-ports/com.redhat.rhevm.vdsm",
    )


def test_sources_by_name() -> None:
    from diskname.agent.sources.udev import UdevSource

    assert isinstance(make_source(AgentConfig(connect="unix:/x")), UdevSource)
    with pytest.raises(SourceUnavailable, match="--sim-hw"):
        make_source(AgentConfig(connect="unix:/x", source="sim"))
    with pytest.raises(SourceUnavailable, match="uevents"):
        make_source(AgentConfig(connect="unix:/x", uevents="both"))
    with pytest.raises(SourceUnavailable, match="unknown source"):
        make_source(AgentConfig(connect="unix:/x", source="wmi"))


def test_backoff_doubles_to_a_cap_and_resets() -> None:
    backoff = Backoff(0.05, 0.3)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05
