"""The engine's matching of guest-reported serials and addresses to a VM's disks."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from diskname.engine.core.matching import VmDisk, match_names, valid_name
from diskname.engine.core.models import HostDevice, VmReport
from diskname.engine.core.planning import DeviceRow, compat_keeps_names, plan_update
from diskname.protocol.disks import disk_serial

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
