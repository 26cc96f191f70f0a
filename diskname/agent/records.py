"""Device records and the mapping the agent reports, without I/O.

Every source (sim, udev) produces :class:`DeviceRecord` values; one
function turns them into the ``disks-usage`` mapping, so the serial rules live
in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..compat import SLOTS
from ..protocol.agent_wire import MAX_LIST_ITEMS, MAX_MAPPING_ENTRIES, DiskEntry
from ..protocol.serials import trim


@dataclass(frozen=True, **SLOTS)
class DeviceRecord:
    """One whole disk as the guest sees it."""

    name: str
    serial: str | None = None
    bus: str | None = None
    # The PCI function (or, for the sim source, whatever the host gave), and
    # for disks behind a SCSI host also the SCSI ``h:c:t:l``.
    address: str | None = None
    scsi_address: str | None = None
    diskseq: int | None = None
    by_id: tuple[str, ...] = ()
    by_path: str | None = None
    size: int | None = None
    partitions: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    mountpoints: tuple[str, ...] = ()


def mapping_key(record: DeviceRecord) -> str:
    """The key a record is reported under.

    The bare serial, trimmed of the padding (spaces, NULs) ATA and NVMe add. The original
    agent used udev's ``ID_SERIAL`` (bus-prefixed for SCSI and SATA); the
    engine accepts both, since it matches a key that equals or ends with the
    disk's serial. The bare one is what sysfs gives too, so the key (and the
    host's hash) stays the same whether or not udevd is running.

    A disk without a serial is still reported, under ``address:<address>``
    (or ``name:<name>`` when even that is unknown): no disk serial ends that
    way, so the engine falls back to the entry's ``address`` field (SPEC §2).
    """
    serial = trim(record.serial)
    if serial:
        return serial
    where = record.scsi_address or record.address
    return f"address:{where}" if where else f"name:{record.name}"


def _address(record: DeviceRecord) -> str | dict[str, str] | None:
    if record.address and record.scsi_address:
        return {"pci": record.address, "scsi": record.scsi_address}
    return record.address or record.scsi_address


def _extras(record: DeviceRecord) -> dict[str, Any]:
    scalars = {
        "diskseq": record.diskseq,
        "bus": record.bus,
        "address": _address(record),
        "by_path": record.by_path,
        "size": record.size,
    }
    lists = {
        "by_id": record.by_id,
        "partitions": record.partitions,
        "holders": record.holders,
        "mountpoints": record.mountpoints,
    }
    out: dict[str, Any] = {k: v for k, v in scalars.items() if v is not None}
    out.update({k: list(v[:MAX_LIST_ITEMS]) for k, v in lists.items() if v})
    return out


def to_entry(record: DeviceRecord) -> DiskEntry:
    """The mapping entry for one record: its name plus the extensions it has."""
    return DiskEntry(name=record.name, extra=MappingProxyType(_extras(record)))


def build_mapping(records: Iterable[DeviceRecord]) -> dict[str, DiskEntry]:
    """``{key: DiskEntry}`` for every record (see :func:`mapping_key`).

    Records are taken in name order and the first one wins a shared serial
    (NVMe namespaces share their controller's), so the result is stable.
    """
    mapping: dict[str, DiskEntry] = {}
    for record in sorted(records, key=lambda r: r.name):
        key = mapping_key(record)
        if key in mapping or len(mapping) >= MAX_MAPPING_ENTRIES:
            continue
        mapping[key] = to_entry(record)
    return mapping


def mapping_json(mapping: dict[str, DiskEntry]) -> dict[str, dict[str, Any]]:
    """The JSON form of a mapping (what the host stores and hashes)."""
    return {key: entry.to_json() for key, entry in mapping.items()}
