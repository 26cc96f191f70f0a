"""Plain values passed between the engine's store, monitor and API."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...protocol import simhw
from ...protocol.disks import DEFAULT_DISK_SIZE, disk_serial
from ...protocol.host_wire import FullVm
from .matching import VmDisk

# The disk interfaces (buses) a disk is plugged on: the wire's list, every tier's.
INTERFACES: tuple[str, ...] = simhw.INTERFACES
# A name (a host's, a VM's, a disk's): no control characters, not only white space.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
# A UUID as the JSON API's document spells it: 8-4-4-4-12 hexadecimal digits.
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


@dataclass(frozen=True, slots=True)
class HostRow:
    id: str
    name: str
    address: str
    port: int
    status: str
    status_reason: str | None = None
    # Sent with Host.authenticate; a secret, never in to_json() or repr().
    token: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "status": self.status,
            "status_reason": self.status_reason,
        }


@dataclass(frozen=True, slots=True)
class VmRow:
    id: str
    name: str
    status: str
    host_id: str

    def to_json(self) -> dict[str, Any]:
        host = {"id": self.host_id}
        return {"id": self.id, "name": self.name, "status": self.status, "host": host}


DISK_NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class Disk:
    """A disk as users see it: its name, size and whether it is ready ("ok" or "locked")."""

    id: str
    name: str
    provisioned_size: int
    status: str
    # Set for a direct-LUN disk: the LUN's own serial (SPEC §2).
    lun_serial: str | None = None
    # Set for a floating disk (POST /api/disks): the domain its image is in.
    storage_domain: StorageRef | None = None
    format: str = "cow"
    sparse: bool = True
    # Why the disk is "illegal" (its image could not be made).
    status_reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "provisioned_size": self.provisioned_size,
            "status": self.status,
        }
        if self.lun_serial is not None:
            out["storage_type"] = "lun"
            out["lun_storage"] = {"serial": self.lun_serial}
        if self.storage_domain is not None:
            out["storage_domains"] = [self.storage_domain.to_json()]
            out["format"], out["sparse"] = self.format, self.sparse
        if self.status_reason is not None:
            out["status_reason"] = self.status_reason
        return out


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage domain as a disk names it."""

    id: str
    name: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


@dataclass(frozen=True, slots=True)
class StorageDomain:
    """Where a host creates images: a libvirt pool, a directory, or memory (sim)."""

    id: str
    host_id: str
    name: str
    kind: str
    available: int
    used: int

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "host": {"id": self.host_id},
            "kind": self.kind,
            "available": self.available,
            "used": self.used,
        }


@dataclass(frozen=True, slots=True)
class DiskSpec:
    """What a new disk is created with."""

    name: str
    provisioned_size: int = DEFAULT_DISK_SIZE
    # A direct LUN keeps the LUN's own serial instead of its id's first 20 characters.
    lun_serial: str | None = None
    # A floating disk: its image's domain (an id, or a name to look up), format, sparseness.
    storage_domain: str | None = None
    format: str = "cow"
    sparse: bool = True


@dataclass(frozen=True, slots=True)
class Attachment:
    vm_id: str
    disk_id: str
    device_id: str
    interface: str
    active: bool
    address: str | None
    logical_name: str | None
    logical_name_source: str | None
    logical_name_seen_at: datetime | None
    # The attached disk, when the row was read with it.
    disk: Disk | None = None

    def to_json(self) -> dict[str, Any]:
        seen = self.logical_name_seen_at
        return {
            "id": self.disk_id,
            "disk": self.disk.to_json() if self.disk else {"id": self.disk_id},
            "interface": self.interface,
            "active": self.active,
            "logical_name": self.logical_name,
            "logical_name_source": self.logical_name_source,
            "logical_name_seen_at": seen.isoformat() if seen else None,
            "vm": {"id": self.vm_id},
        }


@dataclass(frozen=True, slots=True)
class NameChange:
    """One change of a disk's logical name, as the history keeps it.

    ``source`` says where the new name came from (``agent``, ``qemu-ga``) or why
    the name went (``unplug``, ``guest``: no longer reported, ``cluster``: the
    cluster's version keeps no names); ``matched_by`` how the guest's report was
    matched to the disk. ``id`` is the history row's id once stored: the event id.
    """

    vm_id: str
    disk_id: str
    old: str | None
    new: str | None
    source: str | None
    at: datetime
    matched_by: str | None = None
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "vm_id": self.vm_id,
            "disk_id": self.disk_id,
            "old": self.old,
            "new": self.new,
            "source": self.source,
            "matched_by": self.matched_by,
            "at": self.at.isoformat(),
        }

    def history_json(self) -> dict[str, Any]:
        """The entry of ``GET .../history`` (SPEC §7)."""
        return {
            "logical_name": self.new,
            "previous": self.old,
            "source": self.source,
            "matched_by": self.matched_by,
            "seen_at": self.at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class HostDevice:
    """One disk device of a VM as the host reports it (camelCase on the wire)."""

    disk_id: str
    device_id: str
    serial: str
    iface: str
    address: str | None
    plugged: bool = True

    def as_vm_disk(self) -> VmDisk:
        return VmDisk(self.disk_id, self.serial, self.plugged, self.address)


@dataclass(frozen=True, slots=True)
class VmReport:
    """One entry of ``Host.getVMFullList``."""

    vm_id: str
    status: str
    hash: str | None
    name: str | None
    devices: tuple[HostDevice, ...] = ()
    mapping: Mapping[str, Any] = field(default_factory=dict)


# Storage domain ids are derived from their host's id and their name: every engine agrees.
STORAGE_NAMESPACE = uuid.UUID("5f0d7e3a-5b1e-4c1a-9d43-7d2a8c1e0b22")


def storage_domain_id(host_id: str, name: str) -> str:
    return str(uuid.uuid5(STORAGE_NAMESPACE, f"{host_id}/{name}"))


def canonical_uuid(value: Any, *, hyphenated: bool = False) -> str:
    """Lower-case canonical text of a UUID, or :class:`ValueError`.

    Any spelling :class:`uuid.UUID` reads is taken, unless ``hyphenated``: then
    only :data:`UUID_PATTERN` (what the JSON API's document promises to take).
    """
    if not isinstance(value, str) or (hyphenated and not re.fullmatch(UUID_PATTERN, value)):
        raise ValueError(f"not a UUID: {value!r}")
    return str(uuid.UUID(value))


def report_from_wire(vm: FullVm) -> VmReport:
    """The engine's value for one VM of ``Host.getVMFullList``."""
    devices = tuple(
        HostDevice(
            disk_id=d.disk_id,
            device_id=d.device_id,
            serial=d.serial if d.serial is not None else disk_serial(d.disk_id),
            iface=d.iface,
            address=d.address or None,
            plugged=d.plugged,
        )
        for d in vm.devices
    )
    return VmReport(vm.vm_id, vm.status, vm.hash, vm.name, devices, vm.mapping)
