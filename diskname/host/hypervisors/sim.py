"""The sim hypervisor: the host plays QEMU for simulated guests.

For each VM the host serves ``<channels-dir>/<vm_id>.sim-hw`` and writes the
whole plugged-disk state (``protocol.simhw``) to every connected guest on
connect and after every plug or unplug. Hot-plugs reach the guest only this
way, never through the agent channel. :meth:`SimHypervisor.set_guest_layout`
lets a test give a disk partitions, mounts or holders, which the sim guest
then reports as a real one would (SPEC §17).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from ...protocol.simhw import GuestLayout, HardwareState, VirtualDisk, encode_state
from ..devices import Device
from ..serving import Connections
from ..vm import VmState
from .base import StaticInventory

log = logging.getLogger(__name__)

HW_SUFFIX = ".sim-hw"
MAX_UNREAD = 1024 * 1024


def hw_path(channels_dir: Path, vm_id: str) -> Path:
    return channels_dir / f"{vm_id}{HW_SUFFIX}"


def hardware_state(
    devices: Iterable[Device], layouts: Mapping[str, GuestLayout] | None = None
) -> HardwareState:
    """The plugged disks, and the layouts (by disk id) of those among them."""
    devices = tuple(devices)
    wanted = layouts or {}
    return HardwareState(
        disks=tuple(
            VirtualDisk(
                device_id=d.device_id, serial=d.serial, iface=d.iface, address=d.address or ""
            )
            for d in devices
        ),
        layouts=MappingProxyType(
            {d.device_id: wanted[d.disk_id] for d in devices if d.disk_id in wanted}
        ),
    )


class HardwarePort:
    """One VM's hardware port: a UNIX server and the guests connected to it."""

    def __init__(self, devices: tuple[Device, ...], path: Path) -> None:
        self.devices, self.path = devices, path
        self.layouts: dict[str, GuestLayout] = {}  # by disk id
        self._server: asyncio.Server | None = None
        self._connections = Connections()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._accepted, path=str(self.path))

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._connections.serve(writer, self._guest(reader, writer))

    async def _guest(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._send(writer, encode_state(hardware_state(self.devices, self.layouts)))
        # The guest has nothing to say; wait until it hangs up.
        while await reader.read(4096):
            pass

    def _send(self, writer: asyncio.StreamWriter, line: bytes) -> None:
        if writer.is_closing():
            return
        if writer.transport.get_write_buffer_size() > MAX_UNREAD:
            writer.close()  # a guest that never reads loses its hardware view
            return
        writer.write(line)

    def broadcast(self, devices: tuple[Device, ...]) -> None:
        self.devices = devices
        line = encode_state(hardware_state(devices, self.layouts))
        for writer in self._connections.writers:
            self._send(writer, line)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._connections.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class SimHypervisor(StaticInventory):
    """A :class:`~.base.Hypervisor` whose guests are simulated.

    ``unplug_delay`` plays a guest that holds a disk back before releasing it
    (as a real one may while a filesystem is busy): an unplug takes that long.
    """

    name = "sim"

    def __init__(self, channels_dir: Path, unplug_delay: float = 0.0) -> None:
        self._dir = channels_dir
        self._unplug_delay = unplug_delay
        self._ports: dict[str, HardwarePort] = {}

    def hw_path(self, vm_id: str) -> Path:
        return hw_path(self._dir, vm_id)

    async def start_vm(self, vm: VmState) -> None:
        if vm.id in self._ports:
            return
        port = HardwarePort(vm.devices, self.hw_path(vm.id))
        await port.start()
        self._ports[vm.id] = port

    async def stop_vm(self, vm_id: str) -> None:
        port = self._ports.pop(vm_id, None)
        if port is not None:
            await port.close()

    async def hotplug(self, vm: VmState, device: Device) -> Device:
        self._broadcast(vm, (*vm.devices, device))
        return device

    async def hotunplug(self, vm: VmState, device: Device) -> None:
        if self._unplug_delay:
            await asyncio.sleep(self._unplug_delay)  # the guest holds the disk
        self._broadcast(vm, tuple(d for d in vm.devices if d.disk_id != device.disk_id))

    def set_guest_layout(self, vm_id: str, disk_id: str, layout: GuestLayout | None) -> None:
        """What the guest has made of a disk (None: nothing), as a test asks for it.

        Kept while the VM runs, across unplugs; the guest hears of it at once.
        """
        port = self._ports[vm_id]
        if layout is None:
            port.layouts.pop(disk_id, None)
        else:
            port.layouts[disk_id] = layout
        port.broadcast(port.devices)

    def _broadcast(self, vm: VmState, devices: tuple[Device, ...]) -> None:
        port = self._ports.get(vm.id)
        if port is not None:
            port.broadcast(devices)

    async def close(self) -> None:
        for vm_id in list(self._ports):
            await self.stop_vm(vm_id)
