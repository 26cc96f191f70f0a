"""What the libvirt backend makes of libvirt's answers, without libvirt (pure).

- Identity: a domain is a VM whose id is its UUID. A disk diskname plugged
  carries its disk id in a ``ua-<diskId>`` alias; any other disk (in the
  domain's definition, or plugged with ``virsh attach-disk``) gets a stable
  id derived from the domain, its target and its backing source, and keeps
  its real serial, so the guest's report matches it (SPEC §2). A disk with no
  ``<serial>`` is given its derived id's first 20 characters (the guest
  cannot report those: the engine matches such a disk by its address).
- Reports: what changed since the last report of a domain (:func:`report_kind`).
- Events: each libvirt event names a domain; :func:`react` says what to do.
  A guest reboot leaves the domain running and the agent's channel connected,
  so libvirt's ``REBOOT`` event is how the host learns that the guest's names
  may no longer hold (SPEC §17).
- Guest info: ``virDomainGetGuestInfo(DISKS)`` typed parameters become the
  same mapping qemu-ga's ``guest-get-disks`` gives (``source: "qemu-ga"``).
- :class:`Schedule`: when to ask for guest info (after a hot-plug, then
  periodically), as ``host/qga.py`` asks qemu-ga.

libvirt's enum values are part of its stable ABI; they are repeated here so
that this module imports without libvirt-python.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...protocol import qga
from ...protocol.disks import disk_serial
from ..devices import Device
from .libvirt_xml import Domain, DomainDisk

# uuid5 namespace of the ids diskname derives for disks it did not plug.
NAMESPACE = uuid.UUID("6f1c2c5e-3d0a-5b8e-9a57-2f4f6d1e7c3b")

# virDomainState
STATUS = {0: "Unknown", 1: "Up", 2: "Up", 3: "Paused", 4: "Powering down", 5: "Down",
          6: "Down", 7: "Suspended"}  # fmt: skip
RUNNING_STATES = frozenset({1, 2, 3, 4, 7})
# virDomainEventID
EVENT_LIFECYCLE = 0
EVENT_REBOOT = 1  # the guest reset (QEMU's RESET): a reboot, ``virsh reset``
EVENT_DEVICE_REMOVED = 15
EVENT_AGENT_LIFECYCLE = 18
EVENT_DEVICE_ADDED = 19
EVENT_DEVICE_REMOVAL_FAILED = 22
# virConnectDomainEventAgentLifecycleState
AGENT_CONNECTED = 1
AGENT_DISCONNECTED = 2
# Guest info entries read per answer: far above any VM's disk count, so a
# guest cannot make the host loop without bound.
MAX_GUEST_DISKS = 4096


def derived_disk_id(vm_id: str, disk: DomainDisk) -> str:
    """The disk id of a disk diskname did not plug: stable while target and source are."""
    return str(uuid.uuid5(NAMESPACE, f"{vm_id}/disk/{disk.target}/{disk.source}"))


def disk_id(vm_id: str, disk: DomainDisk) -> str:
    return disk.user_disk_id or derived_disk_id(vm_id, disk)


def device_id(vm_id: str, disk_id_: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{vm_id}/device/{disk_id_}"))


def device_of(vm_id: str, disk: DomainDisk) -> Device:
    """The device as the host reports it (SPEC §4)."""
    did = disk_id(vm_id, disk)
    return Device(
        device_id=device_id(vm_id, did),
        disk_id=did,
        serial=disk.serial or disk_serial(did),
        iface=disk.iface,
        address=disk.address,
    )


def devices_of(domain: Domain) -> tuple[Device, ...]:
    return tuple(device_of(domain.uuid, disk) for disk in domain.disks)


def find_disk(domain: Domain, disk_id_: str) -> DomainDisk | None:
    return next((d for d in domain.disks if disk_id(domain.uuid, d) == disk_id_), None)


def status_of(state: int) -> str:
    return STATUS.get(state, "Unknown")


@dataclass(frozen=True, slots=True)
class Seen:
    """What was last reported of a domain."""

    name: str
    status: str
    channel: Path | None
    devices: tuple[Device, ...]


def seen(domain: Domain, state: int) -> Seen:
    # The host connects to a socket QEMU serves (source mode='bind'); a channel
    # where QEMU connects to us is not one the host serves for libvirt.
    agent = domain.agent if state in RUNNING_STATES else None
    channel = agent.path if agent is not None and agent.mode == "connect" else None
    return Seen(domain.name, status_of(state), channel, devices_of(domain))


def report_kind(before: Seen | None, now: Seen) -> Literal["found", "devices"] | None:
    """``found``: report the whole VM; ``devices``: only its devices; None: nothing new."""
    if before is None or (before.name, before.status, before.channel) != (
        now.name, now.status, now.channel,
    ):  # fmt: skip
        return "found"
    return "devices" if before.devices != now.devices else None


# -- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reaction:
    """What one libvirt event asks of the backend."""

    refresh: bool = True  # read the domain again and report what changed
    removed_alias: str | None = None  # a device unplug finished
    removal_failed_alias: str | None = None  # the guest refused an unplug
    ask_guest: bool = False  # qemu-ga just connected: ask for its disks now
    qga_gone: bool = False  # qemu-ga disconnected (the guest is shutting down, say)
    reset: bool = False  # the guest reset: what it said of its disks may no longer hold


def react(event_id: int, args: Sequence[Any]) -> Reaction:
    """The reaction to event ``event_id`` with its callback arguments (after the domain)."""
    if event_id == EVENT_DEVICE_REMOVED and args:
        return Reaction(removed_alias=str(args[0]))
    if event_id == EVENT_DEVICE_REMOVAL_FAILED and args:
        return Reaction(removal_failed_alias=str(args[0]))
    if event_id == EVENT_AGENT_LIFECYCLE:
        state = args[0] if args else None
        return Reaction(
            refresh=False, ask_guest=state == AGENT_CONNECTED, qga_gone=state == AGENT_DISCONNECTED
        )
    if event_id == EVENT_REBOOT:
        return Reaction(refresh=False, reset=True)
    return Reaction()


# -- guest info ----------------------------------------------------------------


def _guest_address(disk: DomainDisk | None, serial: Any) -> dict[str, Any]:
    """A qemu-ga GuestDiskAddress for one guest disk: its serial, and where libvirt
    says it is plugged (libvirt resolves the guest's disk to the domain's, ``alias``)."""
    address: dict[str, Any] = {}
    if isinstance(serial, str):
        address["serial"] = serial
    if disk is None or disk.address is None:
        return address
    address["bus-type"] = disk.bus
    numbers = disk.address.replace(".", ":").split(":")
    try:
        if disk.bus in qga.PCI_BUSES:
            keys = ("domain", "bus", "slot", "function")
            address["pci-controller"] = {k: int(v, 16) for k, v in zip(keys, numbers, strict=True)}
        else:
            _, bus, target, unit = (int(v) for v in numbers)
            address.update(bus=bus, target=target, unit=unit)
    except ValueError:
        pass
    return address


def _count(params: Mapping[str, Any], key: str) -> int:
    value = params.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return 0
    return min(value, MAX_GUEST_DISKS)


def guest_disks(params: Mapping[str, Any], domain: Domain) -> list[dict[str, Any]]:
    """``guestInfo(DISKS)`` typed parameters as a ``guest-get-disks`` return value."""
    targets = {d.target: d for d in domain.disks}
    disks = []
    for n in range(_count(params, "disk.count")):
        prefix = f"disk.{n}."
        deps = [
            params.get(f"{prefix}dependency.{m}.name")
            for m in range(_count(params, f"{prefix}dependency.count"))
        ]
        alias = params.get(f"{prefix}alias")
        disk = targets.get(alias) if isinstance(alias, str) else None
        disks.append(
            {
                "name": params.get(f"{prefix}name"),
                "partition": params.get(f"{prefix}partition") is True,
                "dependencies": [d for d in deps if isinstance(d, str)],
                "address": _guest_address(disk, params.get(f"{prefix}serial")),
            }
        )
    return disks


def mapping_from_guest_info(params: Mapping[str, Any], domain: Domain) -> dict[str, Any]:
    """The qemu-ga mapping from libvirt's guest info; :class:`RemoteProtocolError` if bad.

    Same keys, entries and limits as a direct qemu-ga socket gives
    (:func:`diskname.protocol.qga.mapping_from_disks`).
    """
    return qga.mapping_from_disks(guest_disks(params, domain))


# -- when to ask -----------------------------------------------------------------


@dataclass
class Schedule:
    """When to ask a VM's guest agent for its disks (times on the loop's clock)."""

    interval: float
    rechecks: tuple[float, ...]
    _due: list[float] = field(default_factory=list)
    _periodic: float = 0.0

    def poke(self, now: float) -> None:
        """The VM's disks changed: ask now, then again while the guest settles."""
        self._due = [now + delay for delay in (0.0, *self.rechecks)]

    def next_due(self) -> float:
        return min([*self._due, self._periodic])

    def asked(self, now: float) -> None:
        """An answer came (or failed) at ``now``: drop what is past, restart the period."""
        self._due = [t for t in self._due if t > now]
        self._periodic = now + self.interval
