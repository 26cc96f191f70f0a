"""A VM's disk devices as frozen values, and how a drive request becomes one.

A :class:`Device` never changes; the registry replaces a VM's tuple of them.
Its JSON (camelCase, as in VDSM) is what the hash covers and what
``Host.getVMFullList`` returns, so :meth:`Device.to_json` must not change shape
between releases: the same devices must hash the same after an upgrade.

Addresses come from two pools per VM (PCI slots for virtio-blk and NVMe, SCSI
LUNs for virtio-scsi and SATA), so an address names at most one disk of the VM:
the engine's address fallback relies on that. :class:`Addresses` hands them out
in constant time per device, so a VM.create with many drives stays linear.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..protocol.disks import disk_serial
from ..protocol.limits import MAX_DEVICES_PER_VM
from ..protocol.simhw import INTERFACES
from ..protocol.storage_wire import MAX_IMAGE_SIZE, BadHostMessage, check_domain_name

PCI_INTERFACES = ("virtio", "nvme")
# Low PCI slots belong to the host bridge, the controllers and the root disk's
# neighbours on a typical i440fx/q35 machine; hot-plugged disks start above.
FIRST_PCI_SLOT = 0x05
LAST_PCI_SLOT = 0x1F
MAX_TEXT = 256


class InvalidDevice(ValueError):
    """A drive description the host cannot plug."""


class NoFreeAddress(Exception):
    """Every address a disk could take on that bus is in use: a state, not a bad drive."""


class UnknownDevice(KeyError):
    """No such disk plugged into the VM."""


def pci_address(slot: int) -> str:
    return f"0000:00:{slot:02x}.0"


def scsi_address(lun: int) -> str:
    return f"0:0:0:{lun}"


@dataclass(frozen=True, slots=True)
class Device:
    """One disk of a VM as the host knows it."""

    device_id: str
    disk_id: str
    serial: str
    iface: str
    address: str | None
    plugged: bool = True
    # The image's size in bytes and storage domain, when the engine gave them
    # (a floating disk's image is in a domain; left out of the JSON when unset,
    # so devices from before hash as they did).
    size: int | None = None
    domain: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "deviceId": self.device_id,
            "diskId": self.disk_id,
            "serial": self.serial,
            "iface": self.iface,
            "address": self.address,
            "plugged": self.plugged,
            "type": "disk",
        }
        if self.size is not None:
            out["size"] = self.size
        if self.domain is not None:
            out["storageDomain"] = self.domain
        return out

    @classmethod
    def from_json(cls, raw: Any) -> Device:
        """A device as :meth:`to_json` wrote it (a state file); :class:`InvalidDevice` if not."""
        if not isinstance(raw, Mapping):
            raise InvalidDevice("a device must be an object")
        address = raw.get("address")
        if address is not None and not isinstance(address, str):
            raise InvalidDevice("address must be a string")
        return cls(
            device_id=_uuid(raw, "deviceId"),
            disk_id=_uuid(raw, "diskId"),
            serial=_text(raw, "serial"),
            iface=_iface(raw),
            address=address,
            plugged=raw.get("plugged", True) is not False,
            size=_size(raw),
            domain=_domain(raw),
        )


def _text(raw: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise InvalidDevice(f"{key} must be a non-empty string of at most {MAX_TEXT} characters")
    if not value.isprintable():
        raise InvalidDevice(f"{key} must be printable text")
    return value


def _uuid(raw: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = _text(raw, key, default)
    try:
        canonical = str(uuid.UUID(value))
    except ValueError:
        raise InvalidDevice(f"{key} must be a UUID") from None
    if canonical != value:
        raise InvalidDevice(f"{key} must be a lower-case canonical UUID")
    return value


def _size(raw: Mapping[str, Any]) -> int | None:
    value = raw.get("size")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_IMAGE_SIZE:
        raise InvalidDevice(f"size must be a whole number of bytes, 1 to {MAX_IMAGE_SIZE}")
    return value


def _domain(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("storageDomain")
    if value is None:
        return None
    try:
        return check_domain_name(value)
    except BadHostMessage as exc:
        raise InvalidDevice(str(exc)) from None


def _iface(raw: Mapping[str, Any]) -> str:
    iface = _text(raw, "iface")
    if iface not in INTERFACES:
        raise InvalidDevice(f"iface must be one of {', '.join(INTERFACES)}")
    return iface


class Addresses:
    """The free addresses of one VM, handed out lowest first."""

    def __init__(self, devices: Iterable[Device]) -> None:
        self._taken = {d.address for d in devices if d.address}
        self._next_slot = FIRST_PCI_SLOT
        self._next_lun = 0

    def take(self, iface: str) -> str:
        if iface in PCI_INTERFACES:
            while self._next_slot <= LAST_PCI_SLOT:
                address = pci_address(self._next_slot)
                self._next_slot += 1
                if address not in self._taken:
                    self._taken.add(address)
                    return address
            raise NoFreeAddress("no free PCI slot")
        while True:
            address = scsi_address(self._next_lun)
            self._next_lun += 1
            if address not in self._taken:
                self._taken.add(address)
                return address


def device_for(drive: Mapping[str, Any], addresses: Addresses) -> Device:
    """The device a drive request (``{diskId, deviceId?, serial?, iface}``) becomes."""
    if not isinstance(drive, Mapping):
        raise InvalidDevice("a drive must be an object")
    disk_id = _uuid(drive, "diskId")
    iface = _iface(drive)
    return Device(
        device_id=_uuid(drive, "deviceId", str(uuid.uuid4())),
        disk_id=disk_id,
        serial=_text(drive, "serial", disk_serial(disk_id)),
        iface=iface,
        address=addresses.take(iface),
        size=_size(drive),
        domain=_domain(drive),
    )


def devices_for(drives: Iterable[Mapping[str, Any]]) -> tuple[Device, ...]:
    """Devices for a new VM's drives: at most :data:`MAX_DEVICES_PER_VM`, one per disk."""
    addresses = Addresses(())
    out: dict[str, Device] = {}
    for drive in drives:
        if isinstance(drive, Mapping) and drive.get("diskId") in out:
            continue  # one device per disk: the first drive wins
        if len(out) >= MAX_DEVICES_PER_VM:
            raise InvalidDevice(f"a VM has at most {MAX_DEVICES_PER_VM} disks")
        device = device_for(drive, addresses)
        out[device.disk_id] = device
    return tuple(out.values())
