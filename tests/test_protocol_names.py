"""The device-path grammar (SPEC §12): what a guest may call a disk."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol.names import (
    MAX_NAME_CHARS,
    drive_letters,
    is_windows_name,
    keep_valid,
    name_key,
    refusal,
    valid_device_path,
    valid_windows_mountpoint,
)

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


# -- Windows (SPEC §20) -----------------------------------------------------

WINDOWS_HOSTILE = {
    "\\\\?\\GLOBALROOT\\Device\\Harddisk1\\Partition1": "windows_namespace",
    "\\\\.\\C:": "windows_namespace",
    "\\\\.\\PhysicalDrive1\\..\\C:": "windows_namespace",
    "\\??\\PhysicalDrive1": "windows_namespace",
    "\\Device\\Harddisk0\\DR0": "windows_namespace",
    "\\\\.\\PHYSICALDRIVE12345": "windows_namespace",
    "\\\\.\\PhysicalDrive1\n": "control",
    "/dev/../etc/passwd": "dot_segment",
    "\\\\.\\PhysicalDrive" + "1" * 300: "too_long",
    "C:\\": "not_device_path",
    "": "not_text",
    None: "not_text",
}


@pytest.mark.parametrize("name", ["\\\\.\\PhysicalDrive0", "\\\\.\\physicaldrive7"])
def test_qemu_gas_windows_names_are_accepted_in_any_case(name: str) -> None:
    assert valid_device_path(name) and is_windows_name(name)
    assert name_key(name) == name.upper()


def test_device_paths_keep_their_case_when_compared() -> None:
    assert name_key("/dev/sdA") == "/dev/sdA" and not is_windows_name("/dev/sda")


@pytest.mark.parametrize(("name", "reason"), WINDOWS_HOSTILE.items())
def test_hostile_windows_looking_names_are_refused_with_a_reason(name: object, reason: str) -> None:
    assert not valid_device_path(name)
    assert refusal(name) == reason


@given(st.one_of(st.text(max_size=300), st.sampled_from(GOOD + list(WINDOWS_HOSTILE))))
def test_refusal_agrees_with_the_grammar(name: str) -> None:
    assert (refusal(name) is None) == valid_device_path(name)


@pytest.mark.parametrize(
    "path",
    [
        "D:\\",
        "c:\\",
        "C:\\mnt\\data\\",
        "\\\\?\\Volume{8e4e907a-7424-0d28-5c95-53777a124a6f}\\",
    ],
)
def test_windows_mountpoints(path: str) -> None:
    assert valid_windows_mountpoint(path)


@pytest.mark.parametrize(
    "path",
    [
        "System Reserved",  # qemu-ga's label for a volume without a path
        "D:",
        "D:\\..\\",
        "D:\\data.\\",
        "D:\\a<b\\",
        "\\\\?\\GLOBALROOT\\Device\\HarddiskVolume2\\",
        "\\\\?\\Volume{8e4e907a}\\",
        "/data",
        "D:\\" + "a\\" * 200,
        None,
    ],
)
def test_anything_else_is_no_windows_mountpoint(path: object) -> None:
    assert not valid_windows_mountpoint(path)


def test_drive_letters_for_display() -> None:
    volume = "\\\\?\\Volume{8e4e907a-7424-0d28-5c95-53777a124a6f}\\"
    assert drive_letters(["e:\\", volume, "D:\\", "C:\\mnt\\x\\", "/data"]) == ["D:", "E:"]
    assert drive_letters(None) == []
