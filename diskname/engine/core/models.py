"""Plain values passed between the engine's store, monitor and API."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ...protocol import simhw
from ...protocol.disks import DEFAULT_DISK_SIZE, disk_serial
from ...protocol.host_wire import FullVm
from .matching import VmDisk

# The disk interfaces (buses) a disk is plugged on: the wire's list, every tier's.
INTERFACES: tuple[str, ...] = simhw.INTERFACES
# Characters no name may hold (SPEC §19): C0 and C1 controls, DEL, the bidi marks,
# embeddings, overrides and isolates (U+061C, U+200E/F, U+202A-202E, U+2066-2069)
# and the zero-width ones (U+200B-200D, U+2060, U+FEFF): each can make a name
# show as another on a terminal or a page.
NAME_FORBIDDEN = r"\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff"
# A name (a host's, a VM's, a disk's): none of those, not only white space.
NAME_PATTERN = rf"^[^{NAME_FORBIDDEN}]*[^\s{NAME_FORBIDDEN}][^{NAME_FORBIDDEN}]*$"
NAME_MAX = 255
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


# The ``/api/events`` kind of a guest agent that came or went (SPEC §17).
GUEST_AGENT_EVENT = "guest_agent"


@dataclass(frozen=True, slots=True)
class GuestAgent:
    """A VM's guest agent (SPEC §17): ``up``, ``unresponsive`` or ``none``, since when,
    and the mapping sources up (``agent``, ``qemu-ga``)."""

    status: str = "none"
    since: datetime | None = None
    sources: tuple[str, ...] = ()

    @property
    def stale(self) -> bool:
        """The names the VM shows may no longer hold."""
        return self.status != "up"

    def to_json(self) -> dict[str, Any]:
        since = self.since.isoformat() if self.since is not None else None
        return {"status": self.status, "since": since, "sources": list(self.sources)}


@dataclass(frozen=True, slots=True)
class VmRow:
    id: str
    name: str
    status: str
    host_id: str
    agent_status: str = "none"
    agent_since: datetime | None = None
    agent_sources: Sequence[str] = ()

    @property
    def guest_agent(self) -> GuestAgent:
        return GuestAgent(self.agent_status, self.agent_since, tuple(self.agent_sources))

    def to_json(self) -> dict[str, Any]:
        host = {"id": self.host_id}
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "host": host,
            "guest_agent": self.guest_agent.to_json(),
        }


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
    # The serial the guest sees: the LUN's, or the id's first 20 characters (when read).
    serial: str | None = None
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
        if self.serial is not None:
            out["serial"] = self.serial
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
    # The name the guest gave this disk and another of the VM's too (SPEC §19).
    name_conflict: str | None = None
    # The attached disk, when the row was read with it.
    disk: Disk | None = None
    # SPEC §17: the VM's guest agent is not up, so the name may no longer hold;
    # when the guest last confirmed the name; which source gave it (not served).
    stale: bool = False
    reported_at: datetime | None = None
    origin: str | None = None
    # The guest's whole view of the disk (SPEC §17), None until the guest names it.
    guest: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        seen = self.logical_name_seen_at
        reported = self.reported_at if self.logical_name is not None else None
        return {
            "id": self.disk_id,
            "disk": self.disk.to_json() if self.disk else {"id": self.disk_id},
            "interface": self.interface,
            "active": self.active,
            "logical_name": self.logical_name,
            "logical_name_source": self.logical_name_source,
            "logical_name_seen_at": seen.isoformat() if seen else None,
            "reported_at": reported.isoformat() if reported else None,
            "stale": self.stale,
            "guest": dict(self.guest) if self.guest is not None else None,
            "name_conflict": {"name": self.name_conflict} if self.name_conflict else None,
            "vm": {"id": self.vm_id},
        }

    def confirmed(self, times: Mapping[str, datetime]) -> Attachment:
        """With the newer of the stored ``reported_at`` and its source's time in ``times``."""
        at = times.get(self.origin or "agent")
        if at is None or (self.reported_at is not None and self.reported_at >= at):
            return self
        return dataclasses.replace(self, reported_at=at)


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
class GuestChange:
    """The guest's view of a disk changed (SPEC §17): an ``event: guest`` of ``/api/events``.

    ``id`` comes from the name history's sequence, so name and view events share
    one order and one ``Last-Event-ID``; the attachment keeps the id of its latest.
    """

    vm_id: str
    disk_id: str
    guest: Mapping[str, Any] | None
    id: int | None = None

    KIND = "guest"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.KIND,
            "id": self.id,
            "vm_id": self.vm_id,
            "disk_id": self.disk_id,
            "guest": dict(self.guest) if self.guest is not None else None,
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
        return VmDisk(self.disk_id, self.serial, self.plugged, self.address, self.iface)


@dataclass(frozen=True, slots=True)
class VmReport:
    """One entry of ``Host.getVMFullList``."""

    vm_id: str
    status: str
    hash: str | None
    name: str | None
    devices: tuple[HostDevice, ...] = ()
    mapping: Mapping[str, Any] = field(default_factory=dict)
    # Stored with the hash (SPEC §17): the guest agent as the host's stats last
    # said, and per source when the guest last confirmed its mapping.
    agent: GuestAgent | None = None
    reported_at: Mapping[str, datetime] = field(default_factory=dict)


def valid_object_name(value: object) -> bool:
    """A name as the JSON API takes one (:data:`NAME_PATTERN`, at most :data:`NAME_MAX`).

    The one check for names from users and from hosts (an adopted VM's, SPEC §19).
    """
    return (
        isinstance(value, str)
        and len(value) <= NAME_MAX
        and re.fullmatch(NAME_PATTERN, value) is not None
    )


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
