"""What a sysfs path and a few kernel files say about a disk, without I/O.

The udev source reads the files; the parsing lives here so it is tested on
plain strings: the serial in a SCSI VPD page 0x80, the PCI and SCSI addresses
and the bus in a device path, the mount table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...compat import SLOTS

# Not VM disks: loop, RAM and compressed-RAM disks, device-mapper and md
# devices (they are holders of disks), optical drives.
SKIPPED_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr")

_PCI = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_SCSI = re.compile(r"\d+:\d+:\d+:\d+")
_ATA_PORT = re.compile(r"ata\d+")
_VIRTIO = re.compile(r"virtio\d+")
_ID_PATH_PCI = re.compile(r"pci-([0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])")
_OCTAL = re.compile(r"\\([0-7]{3})")


def is_vm_disk(sys_name: str) -> bool:
    """Whether a whole block device of that name can be a disk of the VM."""
    return not sys_name.startswith(SKIPPED_PREFIXES)


def clean(raw: bytes | str | None) -> str | None:
    """Text without the padding (spaces, NULs, newlines) firmware adds; None if empty."""
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    text = text.strip(" \t\r\n\x00")
    return text or None


def vpd_pg80_serial(page: bytes | None) -> str | None:
    """The unit serial number in a SCSI VPD page 0x80: a 4-byte header, then text."""
    if page is None or len(page) < 4 or page[1] != 0x80:
        return None
    length = int.from_bytes(page[2:4], "big")
    return clean(page[4 : 4 + length])


def path_addresses(sys_path: str) -> tuple[str | None, str | None]:
    """The innermost PCI function (``dddd:bb:ss.f``) and SCSI ``h:c:t:l`` in a device path."""
    pci = scsi = None
    for part in sys_path.split("/"):
        if _PCI.fullmatch(part):
            pci = part
        elif _SCSI.fullmatch(part):
            scsi = part
    return pci, scsi


def id_path_pci(id_path: str | None) -> str | None:
    """The PCI address in udev's ``ID_PATH`` (``pci-0000:01:00.0-nvme-1``)."""
    found = _ID_PATH_PCI.search(id_path or "")
    return found.group(1) if found else None


def bus_of(sys_path: str, sys_name: str) -> str | None:
    """The bus a disk hangs on, named like the host's interfaces.

    Decided from the device path, so it is the same with and without udevd:
    libata puts an ``ataN`` port in the path (SATA, and IDE through libata),
    a virtio device under a SCSI host means virtio-scsi.
    """
    parts = sys_path.split("/")
    _, scsi = path_addresses(sys_path)
    if sys_name.startswith("nvme") or "nvme" in parts:
        return "nvme"
    if any(_ATA_PORT.fullmatch(p) for p in parts):
        return "sata"
    if any(_VIRTIO.fullmatch(p) for p in parts):
        return "virtio_scsi" if scsi else "virtio"
    if any(p.startswith("usb") for p in parts):
        return "usb"
    if scsi:
        return "scsi"
    return None


@dataclass(frozen=True, **SLOTS)
class Mount:
    """One line of ``/proc/self/mountinfo``, the parts we use."""

    devnum: str
    root: str
    path: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \ooo.
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts in a ``mountinfo`` text; malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 2:
            continue
        mounts.append(
            Mount(
                devnum=fields[2],
                root=_unescape(fields[3]),
                path=_unescape(fields[4]),
                fstype=rest[0],
                source=_unescape(rest[1]),
            )
        )
    return mounts


def natural_key(name: str) -> tuple[int, str]:
    """Sort ``/dev/vdb2`` before ``/dev/vdb10``."""
    return len(name), name
