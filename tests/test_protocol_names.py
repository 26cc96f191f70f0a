"""The device-path grammar (SPEC §12): what a guest may call a disk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol.names import MAX_NAME_CHARS, keep_valid, valid_device_path

GOOD = [
    "/dev/vdb",
    "/dev/sdc",
    "/dev/nvme1n1",
    "/dev/disk/by-id/virtio-1a2b3c4d",
    "/dev/disk/by-path/pci-0000:01:00.0",
    "/dev/mapper/vg0-lv_root",
    "/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_x+y@z",
    "\\\\.\\PHYSICALDRIVE2",
    "/dev/" + "a" * (MAX_NAME_CHARS - 5),
]
BAD = [
    "/dev/<svg/onload=alert(1)>",
    "/dev/",
    "/dev",
    "/dev//sda",
    "/dev/../etc/passwd",
    "/dev/sda/..",
    "/dev/./sda",
    "/dev/sd a",
    "/dev/sda\n",
    "/dev/sda\x00",
    "/dev/s\u00e9",
    "/etc/passwd",
    "sda",
    "\\\\.\\PHYSICALDRIVE",
    "\\\\.\\PHYSICALDRIVE1; rm",
    "/dev/" + "a" * (MAX_NAME_CHARS - 4),
    "",
    None,
    7,
]


@pytest.mark.parametrize("name", GOOD)
def test_device_paths_are_accepted(name: str) -> None:
    assert valid_device_path(name)


@pytest.mark.parametrize("name", BAD)
def test_anything_else_is_refused(name: object) -> None:
    assert not valid_device_path(name)


@given(st.text(max_size=300))
def test_an_accepted_name_is_safe_to_show_anywhere(name: str) -> None:
    if valid_device_path(name):
        assert len(name) <= MAX_NAME_CHARS and name.isascii() and name.isprintable()
        assert not set(name) & set("<>\"'&;` \t\n")
        assert "/../" not in name + "/"


def test_a_mapping_keeps_only_its_valid_names() -> None:
    kept, bad = keep_valid({"a": {"name": "/dev/vdb"}, "b": {"name": "/dev/<b>"}, "c": {}})
    assert kept == {"a": {"name": "/dev/vdb"}} and bad == 2
