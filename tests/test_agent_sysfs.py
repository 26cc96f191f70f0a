"""What the udev source reads from sysfs and the mount table, on plain strings."""

from __future__ import annotations

import pytest

from diskname.agent.sources.sysfs import (
    Mount,
    bus_of,
    clean,
    id_path_pci,
    is_vm_disk,
    parse_mountinfo,
    path_addresses,
    vpd_pg80_serial,
)

VIRTIO = "/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vdb"
SCSI = "/sys/devices/pci0000:00/0000:00:03.0/virtio1/host2/target2:0:0/2:0:0:1/block/sda"
SATA = "/sys/devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0/block/sdb"
NVME = "/sys/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1"
NVME_MULTIPATH = "/sys/devices/virtual/nvme-subsystem/nvme-subsys0/nvme0n1"
USB = "/sys/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdc"


@pytest.mark.parametrize(
    ("path", "bus", "pci", "scsi"),
    [
        (VIRTIO, "virtio", "0000:00:05.0", None),
        (SCSI, "virtio_scsi", "0000:00:03.0", "2:0:0:1"),
        (SATA, "sata", "0000:00:1f.2", "0:0:0:0"),
        (NVME, "nvme", "0000:00:04.0", None),
        (NVME_MULTIPATH, "nvme", None, None),
        (USB, "usb", "0000:00:14.0", "6:0:0:0"),
        ("/sys/devices/vbd-51712/block/xvda", None, None, None),
    ],
)
def test_bus_and_addresses_come_from_the_device_path(
    path: str, bus: str | None, pci: str | None, scsi: str | None
) -> None:
    assert bus_of(path, path.rsplit("/", 1)[-1]) == bus
    assert path_addresses(path) == (pci, scsi)


def test_vpd_page_0x80_is_a_header_then_the_padded_serial() -> None:
    text = b"  QM00001 \x00"
    assert vpd_pg80_serial(bytes([0, 0x80, 0, len(text)]) + text) == "QM00001"
    assert vpd_pg80_serial(bytes([0, 0x83, 0, 3]) + b"abc") is None  # another page
    assert vpd_pg80_serial(b"\x00\x80") is None
    assert vpd_pg80_serial(bytes([0, 0x80, 0, 0])) is None
    assert vpd_pg80_serial(None) is None


def test_clean_trims_padding_and_empties_to_none() -> None:
    assert clean(b"S123      \n") == "S123"
    assert clean("  \x00") is None
    assert clean(None) is None
    assert clean(b"\xff ok") == "\ufffd ok"


def test_skipped_devices() -> None:
    kept = ["vda", "sda", "nvme0n1", "xvda", "mmcblk0"]
    skipped = ["loop0", "ram1", "zram0", "dm-3", "md127", "sr0"]
    assert [is_vm_disk(n) for n in kept + skipped] == [True] * 5 + [False] * 6


def test_id_path_pci() -> None:
    assert id_path_pci("pci-0000:01:00.0-nvme-1") == "0000:01:00.0"
    assert id_path_pci("platform-vbd") is None
    assert id_path_pci(None) is None


def test_mountinfo_lines_with_optional_fields_and_escapes() -> None:
    text = (
        "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 shared:2 - ext3 /dev/root rw\n"
        "37 35 8:17 / /srv/a\\040b rw - xfs /dev/sdb1 rw\n"
        "garbage\n"
        "38 35 0:5 / /dev rw - devtmpfs\n"
    )
    assert parse_mountinfo(text) == [
        Mount("98:0", "/mnt1", "/mnt/parent", "ext3", "/dev/root"),
        Mount("8:17", "/", "/srv/a b", "xfs", "/dev/sdb1"),
    ]
