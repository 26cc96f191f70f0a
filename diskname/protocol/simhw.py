"""The simulated hypervisor's hardware port, without I/O.

In ``--hypervisor sim`` the host plays QEMU: it owns each VM's virtual
hardware and tells the simulated guest, over a path of its own (never the
agent channel), which disks are plugged. Each line is the whole state:
``{"disks": [{"serial", "iface", "address", "deviceId"}]}``. The guest side
(the agent's ``sim`` source) plays the kernel and picks device names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..compat import SLOTS, jsonlib
from .errors import RemoteProtocolError

INTERFACES = ("virtio", "virtio_scsi", "sata", "nvme")


@dataclass(frozen=True, **SLOTS)
class VirtualDisk:
    device_id: str
    serial: str
    iface: str
    address: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "deviceId": self.device_id,
            "serial": self.serial,
            "iface": self.iface,
            "address": self.address,
        }


@dataclass(frozen=True, **SLOTS)
class HardwareState:
    disks: tuple[VirtualDisk, ...]


def encode_state(state: HardwareState) -> bytes:
    return jsonlib.dumps({"disks": [d.to_json() for d in state.disks]}) + b"\n"


def decode_state(line: bytes) -> HardwareState:
    try:
        obj = jsonlib.loads(line)
        disks = tuple(
            VirtualDisk(
                device_id=str(d["deviceId"]),
                serial=str(d["serial"]),
                iface=str(d["iface"]),
                address=str(d.get("address", "")),
            )
            for d in obj["disks"]
        )
    except (jsonlib.JSONDecodeError, KeyError, TypeError) as exc:
        raise RemoteProtocolError(f"bad hardware state: {exc}", reason="bad_hw_state") from None
    for disk in disks:
        if disk.iface not in INTERFACES:
            raise RemoteProtocolError(f"unknown interface {disk.iface}", reason="bad_hw_state")
    return HardwareState(disks=disks)
