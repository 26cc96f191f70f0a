"""What a host and the engine say to each other inside JSON-RPC (SPEC §5), without I/O.

The envelope is :mod:`.jsonrpc`'s; this module owns the payloads. The host
builds each reply as a message and sends ``to_wire()``; the engine reads each
with a ``parse_*`` function, which gives a message or raises
:class:`BadHostMessage` (its ``reason`` a stable slug to count by).

- ``Host.getAllVmStats``: a list of :class:`StatsEntry`; asked with a digest
  (``{"digest": D}``, ``""`` for none) an object ``{"digest", "vms"?}`` that
  leaves ``vms`` out while ``D`` still holds (:class:`StatsReply`).
- ``Host.getVMFullList``: per VM asked, a :class:`FullVm`, a :class:`Deferred`
  (did not fit this reply, ask again) or a :class:`VmError` (``VM_TOO_LARGE``:
  no reply can hold it). One bad entry never spoils the others.
- ``|virt|VM_status|<vmId>``: :class:`VmStatus`, sent whenever a VM's hash moves.
- :class:`Code`: the application's JSON-RPC error codes.

A host is trusted with its own VMs only, so every text has a cap here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, TypeVar, Union

from ..compat import SLOTS, jsonlib
from .guest_wire import AgentInfo as AgentInfo
from .guest_wire import Confirmed, parse_agent, parse_confirmed
from .host_fields import (
    MAX_DEVICES,
    MAX_HASH_CHARS,
    MAX_MAPPING_ENTRIES,
    MAX_MESSAGE_CHARS,
    MAX_STATUS_CHARS,
    MAX_TEXT_CHARS,
    as_object,
    bad,
    check_id,
    check_text,
    checked,
    is_int,
    text_or_none,
    vm_key,
)
from .host_fields import BadHostMessage as BadHostMessage  # readers catch it from here
from .host_fields import canonical_uuid as canonical_uuid
from .jsonrpc import Notification, Params


class Code(IntEnum):
    """The application's JSON-RPC error codes (-32000..-32099 is the server's range)."""

    UNKNOWN_VM = -32001
    UNKNOWN_DEVICE = -32002
    HYPERVISOR_ERROR = -32003
    UNAUTHORIZED = -32004
    CONFLICT = -32005
    VM_TOO_LARGE = -32006  # a getVMFullList entry's, never a call's
    # The host could not write the VM's state file: the change was refused and undone.
    STATE_NOT_WRITTEN = -32007


VM_STATUS_PREFIX = "|virt|VM_status|"
DEFAULT_IFACE = "virtio"
T = TypeVar("T")


# -- Host.getAllVmStats ---------------------------------------------------------


@dataclass(frozen=True, **SLOTS)
class StatsEntry:
    """One VM of ``Host.getAllVmStats``: its status and hash (None: not said)."""

    vm_id: str
    status: str | None
    hash: str | None
    agent: AgentInfo | None = None

    def __post_init__(self) -> None:
        check_id(self.vm_id)
        check_text(self.status, "status", MAX_STATUS_CHARS, optional=True)
        check_text(self.hash, "hash", MAX_HASH_CHARS, optional=True)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vmId": self.vm_id, "status": self.status, "hash": self.hash}
        if self.agent is not None:
            out["agent"] = self.agent.to_wire()
        return out


@dataclass(frozen=True, **SLOTS)
class StatsReply:
    """``Host.getAllVmStats``'s answer.

    ``digest`` None: the bare list (an old host, or asked without a digest).
    ``vms`` None: unchanged since the digest asked with, if ``digest`` is it.
    ``skipped``: entries that could not be read (left out; not on the wire).
    ``confirmed``: the guests that confirmed their mapping since the cursor asked
    with (:mod:`.guest_wire`; None when not asked, or from an older host).
    """

    digest: str | None
    vms: tuple[StatsEntry, ...] | None
    skipped: int = field(default=0, compare=False)
    confirmed: Confirmed | None = None

    def __post_init__(self) -> None:
        check_text(self.digest, "digest", MAX_HASH_CHARS, optional=True)

    def to_wire(self) -> Any:
        vms = None if self.vms is None else [e.to_wire() for e in self.vms]
        confirmed = None if self.confirmed is None else self.confirmed.to_wire()
        return stats_reply_wire(self.digest, vms, confirmed)


def stats_reply_wire(
    digest: str | None, listing: T | None, confirmed: dict[str, Any] | None = None
) -> T | dict[str, Any]:
    """The reply's shape around a listing (the host passes one already encoded)."""
    if digest is None and listing is not None:
        return listing
    out: dict[str, Any] = {} if digest is None else {"digest": digest}
    if listing is not None:
        out["vms"] = listing
    if confirmed is not None:
        out["confirmed"] = confirmed
    return out


def stats_params(digest: str | None, confirmed: str | None = None) -> dict[str, str]:
    """The params of ``Host.getAllVmStats`` for the digest held (None: none yet) and,
    when given, the confirmations cursor held ("" for none)."""
    params = {"digest": digest or ""}
    if confirmed is not None:
        params["confirmed"] = confirmed
    return params


def asked_digest(params: Params) -> str | None:
    """The digest the caller holds ("" for none), or None: it wants the bare list."""
    held = params.get("digest") if isinstance(params, dict) else None
    return held if isinstance(held, str) else None


def parse_stats_entry(raw: Any) -> StatsEntry:
    obj = as_object(raw, "a stats entry")
    agent = obj.get("agent")
    return checked(  # each value checked here, once
        StatsEntry,
        vm_key(obj.get("vmId")),
        text_or_none(obj.get("status"), "status", MAX_STATUS_CHARS),
        text_or_none(obj.get("hash"), "hash", MAX_HASH_CHARS),
        parse_agent(agent) if isinstance(agent, dict) else None,
    )


def parse_stats_reply(raw: Any) -> StatsReply:
    """``Host.getAllVmStats``'s result; entries that cannot be read are skipped and counted."""
    if isinstance(raw, list):
        vms, skipped = _entries(raw)
        return StatsReply(None, vms, skipped)
    obj = as_object(raw, "the stats reply")
    listing = obj.get("vms")
    if listing is not None and not isinstance(listing, list):
        raise bad("bad_stats", "vms must be a list")
    digest = text_or_none(obj.get("digest"), "digest", MAX_HASH_CHARS)
    confirmed = parse_confirmed(obj.get("confirmed"))
    if listing is None:
        return StatsReply(digest, None, 0, confirmed)
    vms, skipped = _entries(listing)
    return StatsReply(digest, vms, skipped, confirmed)


def _entries(raw: list[Any]) -> tuple[tuple[StatsEntry, ...], int]:
    out = []
    for item in raw:
        try:
            out.append(parse_stats_entry(item))
        except BadHostMessage:
            continue
    return tuple(out), len(raw) - len(out)


# -- Host.getVMFullList ---------------------------------------------------------


@dataclass(frozen=True, **SLOTS)
class DiskDevice:
    """One disk of a VM (camelCase on the wire, in this key order: it is hashed)."""

    device_id: str
    disk_id: str
    serial: str | None
    iface: str
    address: str | None
    plugged: bool = True

    def __post_init__(self) -> None:
        check_id(self.device_id, self.disk_id)
        check_text(self.serial, "serial", MAX_TEXT_CHARS, optional=True)
        check_text(self.iface, "iface", MAX_TEXT_CHARS)
        check_text(self.address, "address", MAX_TEXT_CHARS, optional=True, empty=True)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deviceId": self.device_id, "diskId": self.disk_id}
        if self.serial is not None:
            out["serial"] = self.serial
        out.update(iface=self.iface, address=self.address, plugged=self.plugged, type="disk")
        return out


@dataclass(frozen=True, **SLOTS)
class FullVm:
    """One VM of ``Host.getVMFullList``: its disks and the guest's disk mapping."""

    vm_id: str
    name: str | None
    status: str
    hash: str | None
    devices: tuple[DiskDevice, ...] = ()
    mapping: Mapping[str, Any] = field(default_factory=dict)
    agent: AgentInfo | None = None  # not hashed; stored with the hash (SPEC §17)

    def __post_init__(self) -> None:
        check_id(self.vm_id)
        check_text(self.name, "name", MAX_TEXT_CHARS, optional=True)
        check_text(self.status, "status", MAX_STATUS_CHARS)
        check_text(self.hash, "hash", MAX_HASH_CHARS, optional=True)
        if len(self.devices) > MAX_DEVICES or len(self.mapping) > MAX_MAPPING_ENTRIES:
            raise bad("too_many", "too many devices or mapping entries")

    def to_wire(self) -> dict[str, Any]:
        out = {
            "vmId": self.vm_id,
            "name": self.name,
            "status": self.status,
            "hash": self.hash,
            "devices": [d.to_wire() for d in self.devices],
            "guestDiskMapping": self.mapping,
        }
        if self.agent is not None:
            out["agent"] = self.agent.to_wire()
        return out


@dataclass(frozen=True, **SLOTS)
class Deferred:
    """A VM that did not fit this reply: ask again."""

    vm_id: str

    def __post_init__(self) -> None:
        check_id(self.vm_id)

    def to_wire(self) -> dict[str, Any]:
        return {"vmId": self.vm_id, "deferred": True}


@dataclass(frozen=True, **SLOTS)
class VmError:
    """A VM the host cannot describe (``VM_TOO_LARGE``); the other VMs are served."""

    vm_id: str
    code: int
    message: str

    def __post_init__(self) -> None:
        check_id(self.vm_id)
        if not is_int(self.code):
            raise bad("bad_field", "an error code must be an integer")
        if not isinstance(self.message, str) or len(self.message) > MAX_MESSAGE_CHARS:
            raise bad("bad_field", f"an error message is a string of {MAX_MESSAGE_CHARS} at most")

    def to_wire(self) -> dict[str, Any]:
        return {"vmId": self.vm_id, "error": {"code": self.code, "message": self.message}}


FullListEntry = Union[FullVm, Deferred, VmError]


def full_list_params(vm_ids: Iterable[str]) -> dict[str, Any]:
    """The params of ``Host.getVMFullList`` for these VMs."""
    return {"vmList": list(vm_ids)}


def asked_vms(params: Params) -> list[str] | None:
    """The VM ids a ``Host.getVMFullList`` asks for (None: all of them)."""
    wanted = params.get("vmList") if isinstance(params, dict) else None
    if wanted is None or (isinstance(wanted, list) and all(isinstance(v, str) for v in wanted)):
        return wanted
    raise bad("bad_params", "vmList must be a list of VM ids")


def parse_device(raw: Any) -> DiskDevice | None:
    """A disk device; None for a device of another type (the engine has no use for it)."""
    if not isinstance(raw, dict) or raw.get("type", "disk") != "disk":
        return None
    address = raw.get("address")
    if address is not None and not isinstance(address, str):
        address = jsonlib.dumps(address, option=jsonlib.OPT_SORT_KEYS).decode()
    iface = raw.get("iface") or DEFAULT_IFACE
    return DiskDevice(
        device_id=canonical_uuid(raw.get("deviceId")),
        disk_id=canonical_uuid(raw.get("diskId")),
        serial=text_or_none(raw.get("serial"), "serial", MAX_TEXT_CHARS),
        iface=iface,
        address=address,
        plugged=raw.get("plugged", True) is not False,
    )


def _full_vm(obj: Mapping[str, Any], vm_id: str) -> FullVm:
    devices, mapping = obj.get("devices") or [], obj.get("guestDiskMapping") or {}
    if not isinstance(devices, list) or not isinstance(mapping, dict):
        raise bad("bad_field", "devices must be a list and guestDiskMapping an object")
    if len(devices) > MAX_DEVICES:
        raise bad("too_many", f"more than {MAX_DEVICES} devices")
    parsed = (parse_device(d) for d in devices)
    agent = obj.get("agent")
    return FullVm(
        vm_id=vm_id,
        name=text_or_none(obj.get("name"), "name", MAX_TEXT_CHARS),
        status=obj.get("status") or "unknown",
        hash=text_or_none(obj.get("hash"), "hash", MAX_HASH_CHARS),
        devices=tuple(d for d in parsed if d is not None),
        mapping=mapping,
        agent=parse_agent(agent) if isinstance(agent, dict) else None,
    )


def parse_full_entry(raw: Any) -> FullListEntry:
    """One entry of ``Host.getVMFullList``; :class:`BadHostMessage` names the VM if it can."""
    obj = as_object(raw, "a VM")
    vm_id = canonical_uuid(obj.get("vmId"))
    try:
        if obj.get("deferred") is True:
            return Deferred(vm_id)
        error = obj.get("error")
        if isinstance(error, dict):
            text = error.get("message")
            text = text[:MAX_MESSAGE_CHARS] if isinstance(text, str) else ""
            code: Any = error.get("code")  # checked by VmError
            return VmError(vm_id, code, text)
        return _full_vm(obj, vm_id)
    except BadHostMessage as exc:
        exc.vm_id = vm_id
        raise


def parse_full_list(raw: Any) -> tuple[FullListEntry | BadHostMessage, ...]:
    """Every entry of ``Host.getVMFullList``: a message, or the error that one entry is."""
    if not isinstance(raw, list):
        raise bad("bad_list", "Host.getVMFullList answers a list")
    return tuple(_entry_or_error(item) for item in raw)


def _entry_or_error(raw: Any) -> FullListEntry | BadHostMessage:
    try:
        return parse_full_entry(raw)
    except BadHostMessage as exc:
        return exc


# -- the notification ---------------------------------------------------------------


@dataclass(frozen=True, **SLOTS)
class VmStatus:
    """``|virt|VM_status|<vmId>``: the VM's hash moved (None: the host did not say to what)."""

    vm_id: str
    hash: str | None

    def __post_init__(self) -> None:
        check_id(self.vm_id)
        check_text(self.hash, "hash", MAX_HASH_CHARS, optional=True)

    def to_notification(self) -> Notification:
        params = {"vmId": self.vm_id, "hash": self.hash}
        return Notification(method=VM_STATUS_PREFIX + self.vm_id, params=params)


def vm_status_event(vm_id: str, vm_hash: str) -> Notification:
    """The notification a host sends whenever a VM's hash changes (SPEC §5)."""
    return VmStatus(vm_id, vm_hash).to_notification()


def parse_notification(note: Notification) -> VmStatus | None:
    """A VM status notification; None for any other method (not ours to read)."""
    if not note.method.startswith(VM_STATUS_PREFIX):
        return None
    vm_id = canonical_uuid(note.method[len(VM_STATUS_PREFIX) :])
    params = note.params if isinstance(note.params, dict) else {}
    return VmStatus(vm_id, text_or_none(params.get("hash"), "hash", MAX_HASH_CHARS) or None)
