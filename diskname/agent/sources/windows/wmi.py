"""WMI/CIM answers about disks, read into the agent's device records, without I/O.

The query (:mod:`.query`) prints one JSON object::

    {"disks": [Win32_DiskDrive...], "sizes": [MSFT_Disk...],
     "partitions": [MSFT_Partition...]}

Why these classes: ``Win32_DiskDrive`` is what oVirt's Windows agent read
(``SerialNumber``, ``DeviceID`` ``\\\\.\\PHYSICALDRIVE<n>``, ``Index``) and it carries
the SCSI address; ``MSFT_Partition.AccessPaths`` lists, per partition, every
drive letter and volume GUID path in one property, where the older
``Win32_DiskDriveToDiskPartition``/``Win32_LogicalDiskToPartition`` chain knows
only drive letters; ``MSFT_Disk.Size`` is exact, where ``Win32_DiskDrive.Size``
is rounded down to whole cylinders. The ``MSFT_*`` classes need Windows 8 or
Server 2012; Python 3.9 itself needs 8.1, so they are always there.

Each disk also carries, from the query, its PnP parent (``Parent``, a PCI
instance id such as ``PCI\\\\VEN_1AF4&DEV_1042&...``) and the parent's
``ParentLocation`` (``PCI bus 0, device 5, function 0``): the virtio PCI device
id says virtio-blk from virtio-scsi (virtio spec: 0x1001/0x1042 block,
0x1004/0x1048 SCSI), the location is the PCI address the host gave.

ConvertTo-Json writes a one-element list as the element itself and an empty
one as null; both are read as lists here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ....protocol.names import valid_device_path, valid_windows_mountpoint
from ....protocol.serials import drop_shared
from ...records import DeviceRecord

_LOCATION = re.compile(r"PCI bus (\d+), device (\d+), function (\d+)", re.IGNORECASE)
_VIRTIO = re.compile(r"PCI\\VEN_1AF4&DEV_(1001|1042|1004|1048)", re.IGNORECASE)
_VIRTIO_BUS = {"1001": "virtio", "1042": "virtio", "1004": "virtio_scsi", "1048": "virtio_scsi"}
# Win32_DiskDrive.InterfaceType -> the host's interface names (as bus_of on Linux).
_INTERFACES = {"IDE": "sata", "SCSI": "scsi", "USB": "usb", "1394": "ieee1394"}


def as_list(value: Any) -> list[Any]:
    """ConvertTo-Json's list: null is [], a lone object is [object]."""
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def pci_of(location: Any) -> str | None:
    """``PCI bus 0, device 5, function 0`` -> ``0000:00:05.0``."""
    match = _LOCATION.search(location) if isinstance(location, str) else None
    if match is None:
        return None
    bus, device, function = (int(g) for g in match.groups())
    if bus > 0xFF or device > 0x1F or function > 7:
        return None
    return f"0000:{bus:02x}:{device:02x}.{function:x}"


def bus_of(disk: Mapping[str, Any]) -> str | None:
    """The bus, named like the host's interfaces: the virtio device id first, then the rest."""
    parent = disk.get("Parent")
    match = _VIRTIO.search(parent) if isinstance(parent, str) else None
    if match:
        return _VIRTIO_BUS[match.group(1)]
    pnp = disk.get("PNPDeviceID")
    if isinstance(pnp, str) and "NVME" in pnp.upper():
        return "nvme"
    kind = disk.get("InterfaceType")
    return _INTERFACES.get(kind.upper()) if isinstance(kind, str) else None


def scsi_of(disk: Mapping[str, Any]) -> str | None:
    """``0:bus:target:lun``; the port (adapter) number is written 0, as the host numbers it."""
    numbers = [_int(disk.get(k)) for k in ("SCSIBus", "SCSITargetId", "SCSILogicalUnit")]
    if any(n is None for n in numbers):
        return None
    return "0:{}:{}:{}".format(*numbers)


def _mountpoints(partitions: list[Any]) -> dict[int, set[str]]:
    found: dict[int, set[str]] = {}
    for part in partitions:
        number = _int(part.get("DiskNumber")) if isinstance(part, dict) else None
        if number is None:
            continue
        paths = [p for p in as_list(part.get("AccessPaths")) if valid_windows_mountpoint(p)]
        found.setdefault(number, set()).update(paths)
    return found


def _sizes(sizes: list[Any]) -> dict[int, int]:
    out = {}
    for disk in sizes:
        number = _int(disk.get("Number")) if isinstance(disk, dict) else None
        size = _int(disk.get("Size")) if isinstance(disk, dict) else None
        if number is not None and size is not None:
            out[number] = size
    return out


def _record(
    disk: Mapping[str, Any], serial: str | None, size: int | None, mounts: set[str]
) -> DeviceRecord:
    bus = bus_of(disk)
    pci = pci_of(disk.get("ParentLocation"))
    # A virtio-blk disk is its own PCI function; Windows' SCSI address for it
    # (always 0/0/0) names nothing the host knows.
    scsi = None if bus in ("virtio", "nvme") else scsi_of(disk)
    return DeviceRecord(
        name=disk["DeviceID"],
        serial=serial,
        bus=bus,
        address=pci,
        scsi_address=scsi,
        size=size if size is not None else _int(disk.get("Size")),
        mountpoints=tuple(sorted(mounts)),
    )


def records_from_cim(answer: Any) -> list[DeviceRecord]:
    """The device records of every disk in a query answer (see the module doc).

    A disk whose ``DeviceID`` is not a device path, or without an ``Index``,
    is left out. Serials are cleaned (SPEC §20): trimmed of spaces and NULs,
    ``0`` and serials several disks share are absent, so those disks are
    reported under their address.
    """
    if not isinstance(answer, dict):
        return []
    disks = [
        d
        for d in as_list(answer.get("disks"))
        if isinstance(d, dict)
        and valid_device_path(d.get("DeviceID"))
        and _int(d.get("Index")) is not None
    ]
    serials = drop_shared(
        {
            i: d.get("SerialNumber") if isinstance(d.get("SerialNumber"), str) else None
            for i, d in enumerate(disks)
        }
    )
    sizes = _sizes(as_list(answer.get("sizes")))
    mounts = _mountpoints(as_list(answer.get("partitions")))
    records = []
    for i, disk in enumerate(disks):
        index = _int(disk["Index"])
        assert index is not None
        records.append(_record(disk, serials[i], sizes.get(index), mounts.get(index, set())))
    return records
