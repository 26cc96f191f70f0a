"""The simulated hypervisor's hardware port, without I/O.

In ``--hypervisor sim`` the host plays QEMU: it owns each VM's virtual
hardware and tells the simulated guest, over a path of its own (never the
agent channel), which disks are plugged. Each line is the whole state:
``{"disks": [{"serial", "iface", "address", "deviceId", "size"}]}``. The guest side
(the agent's ``sim`` source) plays the kernel and picks device names.

A test may also ask for what a guest's administrator would have made of a
disk (:class:`GuestLayout`: partitions, mounts, LVM holders), under
``"layouts": {deviceId: {"partitions", "mountpoints", "holders"}}``, so the
sim guest reports the whole view a real one does (SPEC §17).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..compat import SLOTS, jsonlib
from .disks import DEFAULT_DISK_SIZE
from .errors import RemoteProtocolError

INTERFACES = ("virtio", "virtio_scsi", "sata", "nvme")


@dataclass(frozen=True, **SLOTS)
class VirtualDisk:
    device_id: str
    serial: str
    iface: str
    address: str = ""
    # Bytes, as the guest's kernel sees the disk: what hosts make an image of.
    size: int = DEFAULT_DISK_SIZE

    def to_json(self) -> dict[str, Any]:
        return {
            "deviceId": self.device_id,
            "serial": self.serial,
            "iface": self.iface,
            "address": self.address,
            "size": self.size,
        }


@dataclass(frozen=True, **SLOTS)
class GuestLayout:
    """What the guest made of a disk: ``partitions`` of them, mounted here, held by these."""

    partitions: int = 0
    mountpoints: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "partitions": self.partitions,
            "mountpoints": list(self.mountpoints),
            "holders": list(self.holders),
        }

    @classmethod
    def from_json(cls, raw: Any) -> GuestLayout:
        return cls(
            partitions=int(raw.get("partitions", 0)),
            mountpoints=tuple(str(m) for m in raw.get("mountpoints", ())),
            holders=tuple(str(h) for h in raw.get("holders", ())),
        )


@dataclass(frozen=True, **SLOTS)
class HardwareState:
    disks: tuple[VirtualDisk, ...]
    # Per device id, what a test asked the guest to have made of that disk.
    layouts: Mapping[str, GuestLayout] = field(default_factory=lambda: MappingProxyType({}))


def encode_state(state: HardwareState) -> bytes:
    obj: dict[str, Any] = {"disks": [d.to_json() for d in state.disks]}
    if state.layouts:
        obj["layouts"] = {k: v.to_json() for k, v in state.layouts.items()}
    return jsonlib.dumps(obj) + b"\n"


def _disk(d: Any) -> VirtualDisk:
    size = d.get("size", DEFAULT_DISK_SIZE)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise TypeError("size must be a whole number of bytes")
    return VirtualDisk(
        device_id=str(d["deviceId"]),
        serial=str(d["serial"]),
        iface=str(d["iface"]),
        address=str(d.get("address", "")),
        size=size,
    )


def decode_state(line: bytes) -> HardwareState:
    try:
        obj = jsonlib.loads(line)
        disks = tuple(_disk(d) for d in obj["disks"])
        layouts = {str(k): GuestLayout.from_json(v) for k, v in obj.get("layouts", {}).items()}
    except (jsonlib.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RemoteProtocolError(f"bad hardware state: {exc}", reason="bad_hw_state") from None
    for disk in disks:
        if disk.iface not in INTERFACES:
            raise RemoteProtocolError(f"unknown interface {disk.iface}", reason="bad_hw_state")
    return HardwareState(disks=disks, layouts=MappingProxyType(layouts))
