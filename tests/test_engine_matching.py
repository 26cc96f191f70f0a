"""The engine's matching of guest-reported serials and addresses to a VM's disks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from diskname.engine.core.matching import VmDisk, match_names, valid_name
from diskname.engine.core.models import HostDevice, VmReport
from diskname.engine.core.planning import DeviceRow, compat_keeps_names, plan_update
from diskname.host.devices import Addresses
from diskname.protocol.disks import disk_serial
from diskname.protocol.serials import swap_pairs

A = "1a2b3c4d-5e6f-4a8b-9c0d-112233445566"
B = "99887766-5544-4332-a110-ffeeddccbbaa"
SA, SB = disk_serial(A), disk_serial(B)


def disks(*ids: str, plugged: bool = True) -> list[VmDisk]:
    return [VmDisk(d, disk_serial(d), plugged) for d in ids]


def test_serial_is_first_twenty_characters() -> None:
    assert SA == "1a2b3c4d-5e6f-4a8b-9"


def test_bare_prefixed_and_padded_serials_match() -> None:
    for reported in (
        SA,
        f"0QEMU_QEMU_HARDDISK_{SA}",
        f"QEMU_HARDDISK_{SA}",
        f"  {SA}   ",
        f"QEMU_HARDDISK_ {SA} \t",
    ):
        result = match_names(disks(A, B), {reported: {"name": "/dev/vdb"}})
        assert result.names == {A: "/dev/vdb"}, reported
        assert result.sources[A] == "serial"
        assert not result.rejected


def test_truncated_serial_matches_when_unique() -> None:
    result = match_names(disks(A, B), {SA[:12]: {"name": "/dev/sdb"}})
    assert result.names == {A: "/dev/sdb"}
    assert result.sources[A] == "serial-prefix"
    prefixed = match_names(disks(A, B), {f"QEMU_HARDDISK_{SA[:10]}": {"name": "/dev/sdb"}})
    assert prefixed.names == {A: "/dev/sdb"}


def test_too_short_truncation_is_unmatched() -> None:
    result = match_names(disks(A, B), {SA[:5]: {"name": "/dev/sdb"}})
    assert result.names == {}
    assert result.rejected == {"unmatched": 1}


def test_truncation_shared_by_two_disks_is_ambiguous() -> None:
    other = "1a2b3c4d-5e6f-4a8b-8c0d-000000000001"
    assert disk_serial(other)[:10] == SA[:10] and disk_serial(other) != SA
    result = match_names(disks(A, other), {SA[:10]: {"name": "/dev/sdb"}})
    assert result.names == {}
    assert result.rejected == {"ambiguous": 1}


def test_serial_of_another_vm_is_unmatched() -> None:
    result = match_names(disks(A), {SB: {"name": "/dev/vdc"}})
    assert result.names == {}
    assert result.rejected == {"unmatched": 1}


def test_serial_matching_two_disks_is_ambiguous() -> None:
    one = VmDisk(A, "LUN42")
    two = VmDisk(B, "XLUN42")
    result = match_names([one, two], {"SCSI_XLUN42": {"name": "/dev/sdd"}})
    assert result.names == {}
    assert result.rejected == {"ambiguous": 1}


def test_exact_serial_wins_over_suffix() -> None:
    result = match_names(
        [VmDisk(A, "LUN42"), VmDisk(B, "XLUN42")], {"XLUN42": {"name": "/dev/sdd"}}
    )
    assert result.names == {B: "/dev/sdd"}


def test_unplugged_disks_are_never_named() -> None:
    result = match_names(disks(A, plugged=False), {SA: {"name": "/dev/vdb"}})
    assert result.names == {}
    assert result.rejected == {"unmatched": 1}


def test_disk_without_serial_matches_by_address() -> None:
    disk = VmDisk(A, "", True, "0000:00:07.0")
    mapping = {"": {"name": "/dev/vdc", "address": "0000:00:07.0"}}
    result = match_names([disk, *disks(B)], mapping)
    assert result.names == {A: "/dev/vdc"}
    assert result.sources[A] == "address"
    by_object = match_names([disk], {"x": {"name": "/dev/vdc", "address": {"pci": "0000:00:07.0"}}})
    assert by_object.names == {A: "/dev/vdc"}


def test_address_fallback_never_overrides_a_serial_match() -> None:
    disk = VmDisk(A, SA, True, "0:0:0:1")
    mapping = {SA: {"name": "/dev/sda"}, "junk": {"name": "/dev/sdz", "address": "0:0:0:1"}}
    result = match_names([disk], mapping)
    assert result.names == {A: "/dev/sda"}
    assert result.rejected == {"unmatched": 1}


def test_two_entries_naming_one_disk_differently_are_dropped() -> None:
    mapping = {SA: {"name": "/dev/vdb"}, f"QEMU_HARDDISK_{SA}": {"name": "/dev/sdb"}}
    result = match_names(disks(A), mapping)
    assert result.names == {}
    assert result.rejected == {"ambiguous": 1}


def test_bad_names_and_entries_are_rejected() -> None:
    mapping = {
        SA: {"name": "vdb"},
        SB: {"name": "/dev/" + "x" * 300},
        "c": {"name": "/dev/vd\x00b"},
        "d": "not an object",
        "e": {"size": 3},
    }
    result = match_names(disks(A, B), mapping)
    assert result.names == {}
    assert result.rejected == {"bad_name": 4, "bad_entry": 1}


def test_valid_names() -> None:
    for good in ("/dev/vdb", "/dev/nvme1n1", "/dev/disk/by-id/virtio-abc", r"\\.\PHYSICALDRIVE2"):
        assert valid_name(good), good
    for bad in (
        "",
        "vdb",
        "/dev/",
        "/dev/a b",
        "/etc/passwd",
        "/dev/../etc/x",
        r"\\.\DRIVE2",
        "/dev/" + "a" * 251,
        None,
        5,
    ):
        assert not valid_name(bad), bad
    assert valid_name("/dev/" + "a" * 250)


def test_compatibility_versions_compare_numerically() -> None:
    assert compat_keeps_names("3.5") and compat_keeps_names("4.7") and compat_keeps_names("3.10")
    assert not compat_keeps_names("3.4") and not compat_keeps_names("2.9.9")
    assert (
        not compat_keeps_names("") and not compat_keeps_names("x") and not compat_keeps_names(None)
    )


def test_plan_writes_nothing_when_nothing_changed() -> None:
    now = datetime.now(UTC)
    dev = HostDevice(A, B, SA, "virtio", "0000:00:07.0")
    report = VmReport(
        vm_id=B,
        status="up",
        hash="h",
        name=None,
        devices=(dev,),
        mapping={SA: {"name": "/dev/vdb"}},
    )
    match = match_names([dev.as_vm_disk()], report.mapping)
    first = plan_update(report, match, [], keep_names=True, now=now)
    assert [c.new for c in first.changes] == ["/dev/vdb"]
    assert first.new_disks == [(A, SA)]
    second = plan_update(report, match, [DeviceRow(*first.rows[0])], keep_names=True, now=now)
    assert second.rows == [] and second.changes == [] and second.new_disks == []


# -- Windows guests (SPEC §20) ------------------------------------------------

PD1, PD2, PD3 = (f"\\\\.\\PhysicalDrive{n}" for n in (1, 2, 3))
BLK_PCI, OTHER_BLK_PCI, SCSI_CONTROLLER = "0000:00:06.0", "0000:00:07.0", "0000:00:1e.0"


def windows_entry(name: str, pci: str, scsi: str | None = "0:0:0:0", **extra: str) -> dict:
    """An entry as the host writes qemu-ga's Windows answers (protocol/qga_windows)."""
    address = {"pci": pci, "scsi": scsi} if scsi else {"pci": pci}
    return {"name": name, "source": "qemu-ga", "bus": "scsi", "address": address, **extra}


def test_a_virtio_blk_entry_at_scsi_0_0_0_never_names_a_virtio_scsi_disk() -> None:
    blk = VmDisk(A, SA, True, BLK_PCI, "virtio")
    scsi = VmDisk(B, SB, True, "0:0:0:0", "virtio_scsi")
    mapping = {SA: windows_entry(PD1, BLK_PCI), "name:" + PD2: windows_entry(PD2, BLK_PCI)}
    result = match_names([blk, scsi], mapping)
    assert result.names == {A: PD1}  # the disk at 0:0:0:0 is not the blk disk's second entry
    assert result.rejected == {"unmatched": 1}
    as_agent = {"x": {"name": PD2, "bus": "virtio", "address": {"scsi": "0:0:0:0"}}}
    assert match_names([blk, scsi], as_agent).names == {}  # a virtio bus is no SCSI disk's


def test_two_disks_reporting_serial_0_are_each_named_by_their_own_address() -> None:
    blk = VmDisk(A, SA, True, OTHER_BLK_PCI, "virtio")
    scsi = VmDisk(B, SB, True, "0:0:0:0", "virtio_scsi")
    mapping = {
        "name:" + PD2: windows_entry(PD2, OTHER_BLK_PCI),
        "address:0:0:0:0": windows_entry(PD3, SCSI_CONTROLLER),
    }
    result = match_names([scsi, blk], mapping)
    assert result.names == {A: PD2, B: PD3}
    assert result.sources == {A: "address", B: "address"} and not result.rejected


def test_a_lagging_entry_of_an_unplugged_virtio_blk_disk_names_no_scsi_disk() -> None:
    scsi = VmDisk(B, SB, True, "0:0:0:0", "virtio_scsi")  # the blk disk has just left
    result = match_names([scsi], {SA: windows_entry(PD1, BLK_PCI, serial=SA)})
    assert result.names == {} and result.rejected == {"unmatched": 1}
    blk = VmDisk(B, SB, True, BLK_PCI, "virtio")  # its PCI function still names a blk disk
    assert match_names([blk], {SA: windows_entry(PD1, BLK_PCI, serial=SA)}).names == {B: PD1}
    # Linux: a disk libvirt gave no serial is reported under QEMU's; its address decides.
    sdb = VmDisk(B, SB, True, "0:0:0:1", "virtio_scsi")
    linux = {"0QEMU_QEMU_HARDDISK_drive-scsi0": {"name": "/dev/sdb", "address": "0:0:0:1"}}
    assert match_names([sdb], linux).names == {B: "/dev/sdb"}


def test_the_bus_decides_for_linux_addresses_too() -> None:
    vdb = VmDisk(A, "", True, "0000:00:07.0", "virtio")
    sdb = VmDisk(B, "", True, "0:0:0:1", "sata")
    mapping = {
        "address:0000:00:07.0": {"name": "/dev/vdb", "bus": "virtio", "address": "0000:00:07.0"},
        "address:0:0:0:1": {"name": "/dev/sdb", "bus": "sata", "address": "0:0:0:1"},
    }
    assert match_names([vdb, sdb], mapping).names == {A: "/dev/vdb", B: "/dev/sdb"}
    nvme = VmDisk(A, "", True, "0:0:0:1", "nvme")  # an NVMe disk has no SCSI address
    assert match_names([nvme], {"k": windows_entry(PD1, "0000:00:09.0", "0:0:0:1")}).names == {}


def test_a_serial_of_0_goes_to_the_address_fallback() -> None:
    disk = VmDisk(A, "0", True, BLK_PCI, "virtio")  # even a disk whose serial is "0"
    for key in ("0", " 0\x00", "NO SERIAL NUMBER"):
        result = match_names([disk], {key: windows_entry(PD1, BLK_PCI)})
        assert result.names == {A: PD1} and result.sources == {A: "address"}, key
        assert match_names([disk], {key: {"name": PD1}}).rejected == {"unmatched": 1}


def test_padded_and_byte_swapped_serials_match() -> None:
    sata = VmDisk(A, SA, True, "0:0:0:1", "sata")
    for key in (SA + "   \x00", "\x00" + SA, swap_pairs(SA), swap_pairs(SA) + " \x00"):
        result = match_names([sata, *disks(B)], {key: {"name": PD1}})
        assert result.names == {A: PD1}, repr(key)
        assert result.sources == {A: "serial"}
    odd = VmDisk(A, "ABCDEFGHIJKLMNO", True, "0:0:0:1", "sata")  # 15 characters in 20 bytes
    swapped = swap_pairs(odd.serial.ljust(20))
    for key in (swapped, swapped.strip()):  # its padding kept, or lost
        assert match_names([odd], {key: {"name": PD1}}).names == {A: PD1}, repr(key)


def test_a_swapped_serial_is_tried_only_when_the_reported_one_matches_nothing() -> None:
    reported, swapped = (
        VmDisk(A, "AB12CD34EF56GH78IJ90"),
        VmDisk(B, swap_pairs("AB12CD34EF56GH78IJ90")),
    )
    result = match_names([reported, swapped], {"AB12CD34EF56GH78IJ90": {"name": PD1}})
    assert result.names == {A: PD1} and not result.rejected
    unknown = match_names(disks(A), {swap_pairs(SB): {"name": PD1}})
    assert unknown.names == {} and unknown.rejected == {"unmatched": 1}


def test_fallback_keys_are_never_taken_for_serials() -> None:
    disk = VmDisk(A, "00:07.0", True, "0000:00:08.0", "virtio")  # a serial the key ends with
    result = match_names([disk], {"address:0000:00:07.0": {"name": "/dev/vdb"}})
    assert result.names == {} and result.rejected == {"unmatched": 1}


def test_windows_names_differing_in_case_are_one_name() -> None:
    mapping = {
        SA: {"name": "\\\\.\\PHYSICALDRIVE1"},
        f"QEMU_HARDDISK_{SA}": {"name": "\\\\.\\physicaldrive1"},
    }
    result = match_names(disks(A), mapping)
    assert result.names == {A: "\\\\.\\PHYSICALDRIVE1"} and not result.rejected  # first kept
    linux = match_names(disks(A), {SA: {"name": "/dev/sdb"}, f"x{SA}": {"name": "/dev/SDB"}})
    assert linux.names == {} and linux.rejected == {"ambiguous": 1}  # device paths keep case


def test_a_change_of_case_alone_is_no_change() -> None:
    now = datetime.now(UTC)
    dev = HostDevice(A, B, SA, "virtio", BLK_PCI)
    report = VmReport(B, "up", "h", None, (dev,), {SA: {"name": "\\\\.\\PHYSICALDRIVE1"}})
    first = plan_update(
        report, match_names([dev.as_vm_disk()], report.mapping), [], keep_names=True, now=now
    )
    again = VmReport(B, "up", "h2", None, (dev,), {SA: {"name": PD1}})
    second = plan_update(
        again,
        match_names([dev.as_vm_disk()], again.mapping),
        [DeviceRow(*first.rows[0])],
        keep_names=True,
        now=now,
    )
    assert second.rows == [] and second.changes == []  # the stored case stays
    renamed = VmReport(B, "up", "h3", None, (dev,), {SA: {"name": PD2}})
    third = plan_update(
        renamed,
        match_names([dev.as_vm_disk()], renamed.mapping),
        [DeviceRow(*first.rows[0])],
        keep_names=True,
        now=now,
    )
    assert [(c.old, c.new) for c in third.changes] == [("\\\\.\\PHYSICALDRIVE1", PD2)]


def test_refused_names_are_counted_with_why() -> None:
    mapping = {
        SA: {"name": "\\\\?\\GLOBALROOT\\Device\\Harddisk9\\DR9"},
        SB: {"name": "\\\\.\\PhysicalDrive1\\..\\C:"},
        "c": {"name": "\\\\.\\PhysicalDrive" + "9" * 300},
        "d": {"name": "/dev/vd\x00b"},
        "e": {"name": "/dev/../x"},
        "f": {"name": 5},
    }
    result = match_names(disks(A, B), mapping)
    assert result.names == {} and result.rejected == {"bad_name": 6}
    assert result.refused == {
        "windows_namespace": 2,
        "too_long": 1,
        "control": 1,
        "dot_segment": 1,
        "not_text": 1,
    }


# -- properties --------------------------------------------------------------

uuids = st.uuids().map(str)
bus_prefixes = st.sampled_from(["", "0QEMU_QEMU_HARDDISK_", "QEMU_HARDDISK_", "SCSI_", "x"])
padding = st.text(alphabet=" \t", max_size=6)


@given(uuids, st.lists(uuids, max_size=5), bus_prefixes, padding, padding)
def test_prefixing_and_padding_never_break_a_match(
    target: str, others: list[str], prefix: str, left: str, right: str
) -> None:
    vm_disks = disks(target, *[o for o in others if disk_serial(o) != disk_serial(target)])
    reported = f"{left}{prefix}{disk_serial(target)}{right}"
    result = match_names(vm_disks, {reported: {"name": "/dev/vdq"}})
    assert result.names == {target: "/dev/vdq"}


@given(
    st.lists(uuids, min_size=0, max_size=4),
    st.dictionaries(
        st.text(max_size=40),
        st.fixed_dictionaries(
            {
                "name": st.sampled_from(["/dev/vda", "/dev/sdb", "bad"]),
                "address": st.text(max_size=12),
            }
        ),
        max_size=6,
    ),
)
def test_a_guest_can_only_name_disks_of_its_vm(
    ids: list[str], mapping: dict[str, dict[str, str]]
) -> None:
    vm_disks = disks(*ids)
    result = match_names(vm_disks, mapping)
    assert set(result.names) <= {d.disk_id for d in vm_disks}
    assert all(valid_name(n) for n in result.names.values())
    assert sum(result.rejected.values()) <= len(mapping) + len(vm_disks)


@given(
    st.lists(st.sampled_from(["virtio", "virtio_scsi", "sata", "nvme"]), min_size=1, max_size=6),
    st.lists(
        st.tuples(
            st.sampled_from(["0000:00:05.0", "0000:00:06.0", "0000:00:1e.0", None]),
            st.sampled_from(["0:0:0:0", "0:0:0:1", None]),
            st.sampled_from(["scsi", "sata", "virtio", "virtio_scsi", "nvme", None]),
        ),
        max_size=6,
    ),
)
def test_an_entry_at_a_pci_disks_address_never_names_a_controller_disk(
    ifaces: list[str], places: list[tuple[str | None, str | None, str | None]]
) -> None:
    addresses = Addresses(())
    vm_disks = [
        VmDisk(str(uuid.UUID(int=i)), "", True, addresses.take(iface), iface)
        for i, iface in enumerate(ifaces)
    ]
    pci_disks = {d.address for d in vm_disks if d.iface in ("virtio", "nvme")}
    mapping: dict[str, dict[str, Any]] = {}
    for n, (pci, scsi, bus) in enumerate(places):
        address = {k: v for k, v in (("pci", pci), ("scsi", scsi)) if v}
        mapping[f"name:{n}"] = {"name": f"/dev/sd{n}", "address": address, "bus": bus}
    result = match_names(vm_disks, mapping)
    for disk in vm_disks:
        if disk.disk_id in result.names:
            entry = mapping["name:" + result.names[disk.disk_id].removeprefix("/dev/sd")]
            if disk.iface in ("virtio", "nvme"):
                assert entry["address"].get("pci") == disk.address
            else:
                assert entry["address"].get("scsi") == disk.address
                assert entry["address"].get("pci") not in pci_disks
                assert entry["bus"] not in ("virtio", "nvme")


def test_a_windows_disk_keeps_only_windows_mountpoints() -> None:
    volume = "\\\\?\\Volume{0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9}\\"
    entry = {"name": PD1, "mountpoints": ["D:\\", volume, "/", "/data"]}
    result = match_names(disks(A), {SA: entry})
    assert result.guests[A]["mountpoints"] == sorted(["D:\\", volume])
    assert result.rejected == {"bad_mountpoint": 2}
    only_linux = match_names(disks(A), {SA: {"name": PD1, "mountpoints": ["/"]}})
    assert "mountpoints" not in only_linux.guests[A] and not only_linux.guests[A]["in_use"]


def test_two_disks_given_one_windows_name_in_two_cases_get_neither() -> None:
    mapping = {SA: {"name": "\\\\.\\PHYSICALDRIVE1"}, SB: {"name": PD1}}
    result = match_names(disks(A, B), mapping)
    assert result.names == {} and result.rejected == {"duplicate_name": 2}
    assert result.conflicts == {A: "\\\\.\\PHYSICALDRIVE1", B: PD1}
