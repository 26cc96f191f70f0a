"""One VM's state on the host: devices, guest mapping, agent status, hash.

Plain state, no I/O. The hash covers the devices *and* the guest mapping so
the engine notices a name that arrives after the device did; it is cached
and recomputed only when either changes.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..protocol.hashing import vm_hash
from ..protocol.simhw import INTERFACES

PCI_INTERFACES = ("virtio", "nvme")
# Low PCI slots belong to the host bridge, the controllers and the root disk's
# neighbours on a typical i440fx/q35 machine; hot-plugged disks start above.
FIRST_PCI_SLOT = 0x05
LAST_PCI_SLOT = 0x1F
SERIAL_CHARS = 20
MAX_TEXT = 256
AGENT_API_VERSION = 3
AGENT = "agent"
QEMU_GA = "qemu-ga"


def merge_mappings(sources: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One mapping from both guest sources, as a pure function of the two.

    The oVirt agent wins; qemu-ga fills in disks the agent does not name.
    Because the result depends only on each source's latest report (never on
    which arrived last), two sources cannot make the mapping, and so the
    hash, flip-flop (FACTS §4).
    """
    agent = sources.get(AGENT, {})
    named = {entry.get("name") for entry in agent.values()}
    merged = {k: v for k, v in sources.get(QEMU_GA, {}).items() if v.get("name") not in named}
    merged.update(agent)
    return merged


class InvalidDevice(ValueError):
    """A drive description the host cannot plug."""


class UnknownDevice(KeyError):
    """No such disk plugged into the VM."""


def pci_address(slot: int) -> str:
    return f"0000:00:{slot:02x}.0"


def scsi_address(lun: int) -> str:
    return f"0:0:0:{lun}"


def _text(drive: dict[str, Any], key: str, default: str | None = None) -> str:
    value = drive.get(key, default)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise InvalidDevice(f"{key} must be a non-empty string of at most {MAX_TEXT} characters")
    return value


@dataclass
class Vm:
    id: str
    name: str
    devices: list[dict[str, Any]] = field(default_factory=list)
    mapping: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Each source's latest mapping; ``mapping`` is their merge.
    sources: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    api_version: int | None = None
    last_heartbeat: float | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    _hash: str | None = field(default=None, repr=False)

    @property
    def hash(self) -> str:
        if self._hash is None:
            self._hash = vm_hash(self.devices, self.mapping)
        return self._hash

    def agent_status(self, now: float, timeout: float) -> str:
        """``unknown`` until a heartbeat; ``unresponsive`` after ``timeout`` of silence."""
        if self.last_heartbeat is None:
            return "unknown"
        return "up" if now - self.last_heartbeat <= timeout else "unresponsive"

    def heartbeat(self, now: float, reported_version: int) -> int:
        """Record a heartbeat; returns the API version both sides will speak."""
        self.last_heartbeat = now
        self.api_version = max(0, min(reported_version, AGENT_API_VERSION))
        return self.api_version

    def set_mapping(self, mapping: dict[str, dict[str, Any]], source: str = AGENT) -> bool:
        """Record ``source``'s latest mapping; True if the merged mapping changed."""
        self.sources[source] = mapping
        merged = merge_mappings(self.sources)
        if merged == self.mapping:
            return False
        self.mapping = merged
        self._hash = None
        return True

    def device(self, disk_id: str) -> dict[str, Any] | None:
        return next((d for d in self.devices if d["diskId"] == disk_id), None)

    def plug(self, drive: dict[str, Any]) -> dict[str, Any]:
        """Add a disk (idempotent per diskId); returns its device JSON."""
        existing = self.device(_text(drive, "diskId"))
        if existing is not None:
            return existing
        device = self.new_device(drive)
        self.add_device(device)
        return device

    def new_device(self, drive: dict[str, Any]) -> dict[str, Any]:
        """The device JSON a drive would get (validated, address allocated), not added yet."""
        return self._new_device(_text(drive, "diskId"), drive)

    def add_device(self, device: dict[str, Any]) -> None:
        self.devices.append(device)
        self._hash = None

    def unplug(self, disk_id: str) -> dict[str, Any] | None:
        device = self.device(disk_id)
        if device is not None:
            self.devices.remove(device)
            self._hash = None
        return device

    def _new_device(self, disk_id: str, drive: dict[str, Any]) -> dict[str, Any]:
        iface = _text(drive, "iface")
        if iface not in INTERFACES:
            raise InvalidDevice(f"iface must be one of {', '.join(INTERFACES)}")
        return {
            "deviceId": _text(drive, "deviceId", str(uuid.uuid4())),
            "diskId": disk_id,
            "serial": _text(drive, "serial", disk_id[:SERIAL_CHARS]),
            "iface": iface,
            "address": self._free_address(iface),
            "plugged": True,
            "type": "disk",
        }

    def _free_address(self, iface: str) -> str:
        # One PCI slot pool (virtio-blk, NVMe) and one SCSI LUN pool (virtio-scsi,
        # SATA), so an address names at most one disk of the VM: the engine's
        # address fallback relies on that.
        taken = {d["address"] for d in self.devices}
        if iface in PCI_INTERFACES:
            for slot in range(FIRST_PCI_SLOT, LAST_PCI_SLOT + 1):
                if pci_address(slot) not in taken:
                    return pci_address(slot)
            raise InvalidDevice("no free PCI slot")
        return next(scsi_address(n) for n in range(len(taken) + 1) if scsi_address(n) not in taken)

    def to_definition(self) -> dict[str, Any]:
        """What survives a restart."""
        return {
            "vmId": self.id,
            "name": self.name,
            "devices": self.devices,
            "guestDiskMapping": self.mapping,
            "mappingSources": self.sources,
        }

    @classmethod
    def from_definition(cls, data: dict[str, Any]) -> Vm:
        mapping = dict(data.get("guestDiskMapping", {}))
        # State written before there were two sources holds the agent's mapping only.
        sources = data.get("mappingSources") or ({AGENT: mapping} if mapping else {})
        return cls(
            id=str(data["vmId"]),
            name=str(data["name"]),
            devices=list(data.get("devices", [])),
            mapping=mapping,
            sources=dict(sources),
        )
