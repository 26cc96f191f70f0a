"""The QEMU hypervisor: hot-plug through each VM's QMP socket.

QEMU runs the VM (started by whoever defines it: libvirt, a test, a script);
the host finds its QMP socket by convention at ``<channels-dir>/<vm_id>.qmp``,
next to the agent channel ``<vm_id>.ovirt-guest-agent.0``, and connects when
it first needs it. The machine must offer hot-pluggable buses: empty
``pcie-root-port`` devices (for virtio-blk and NVMe) and a ``virtio-scsi-pci``
controller with id ``scsi0`` (see docs/design.md, "QEMU").

Plug: ``qemu-img create`` (once per disk, kept for re-plugs) under
``<state-dir>/images``, ``blockdev-add``, ``device_add`` with the disk's
serial. Unplug: ``device_del``, wait for ``DEVICE_DELETED``, ``blockdev-del``.
When QEMU refuses, the VM's devices are put back as they were and the error,
with QEMU's own message, goes back to the JSON-RPC caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from pathlib import Path
from typing import Any

from ...protocol.disks import DEFAULT_DISK_SIZE
from ..devices import Device
from ..qmp_client import QmpClient, QmpCommandError, QmpError
from ..vm import VmState
from .base import HypervisorError, StaticInventory
from .images import ensure_qcow2

log = logging.getLogger(__name__)

QMP_SUFFIX = ".qmp"
SCSI_BUS = "scsi0.0"
CONNECT_TIMEOUT = 5.0
UNPLUG_TIMEOUT = 10.0
DRIVERS = {"virtio": "virtio-blk-pci", "nvme": "nvme", "virtio_scsi": "scsi-hd", "sata": "ide-hd"}
ROOT_PORT = "pcie-root-port"
PERIPHERALS = "/machine/peripheral"


class QemuError(HypervisorError):
    """QEMU (or qemu-img) refused; answered over JSON-RPC as ``HYPERVISOR_ERROR``
    with QEMU's own message."""


def qmp_path(channels_dir: Path, vm_id: str) -> Path:
    return channels_dir / f"{vm_id}{QMP_SUFFIX}"


def qdev_id(device: Device) -> str:
    # QEMU ids must start with a letter; a UUID may not.
    return f"dn-{device.device_id}"


def node_name(device: Device) -> str:
    # Block node names are limited to 31 characters.
    return f"dn{uuid.UUID(device.device_id).hex[:24]}"


def root_ports(peripherals: list[dict[str, Any]]) -> list[str]:
    """The ids of the PCIe root ports in a ``qom-list /machine/peripheral``, in order."""
    ids = [p["name"] for p in peripherals if p.get("type") == f"child<{ROOT_PORT}>"]
    return sorted(ids, key=lambda i: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", i)])


def bus_is_empty(properties: list[dict[str, Any]]) -> bool:
    """True if a ``qom-list`` of a bus shows no device on it (no ``child[N]`` link)."""
    return not any(str(p.get("name", "")).startswith("child[") for p in properties)


class QemuHypervisor(StaticInventory):
    """A :class:`~.base.Hypervisor` that drives real QEMU processes over QMP."""

    name = "qemu"

    def __init__(
        self, channels_dir: Path, state_dir: Path, unplug_timeout: float = UNPLUG_TIMEOUT
    ) -> None:
        self._channels = channels_dir
        self._images = state_dir / "images"
        self._unplug_timeout = unplug_timeout
        self._clients: dict[str, QmpClient] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def qmp_path(self, vm_id: str) -> Path:
        return qmp_path(self._channels, vm_id)

    def image_path(self, disk_id: str) -> Path:
        return self._images / f"{disk_id}.qcow2"

    async def start_vm(self, vm: VmState) -> None:
        # QEMU runs the VM; the QMP connection is opened when first needed.
        self._locks.setdefault(vm.id, asyncio.Lock())

    async def stop_vm(self, vm_id: str) -> None:
        client = self._clients.pop(vm_id, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for vm_id in list(self._clients):
            await self.stop_vm(vm_id)

    async def hotplug(self, vm: VmState, device: Device) -> Device:
        async with self._locks.setdefault(vm.id, asyncio.Lock()):
            await self._plug(vm.id, device)
        return device

    async def hotunplug(self, vm: VmState, device: Device) -> None:
        async with self._locks.setdefault(vm.id, asyncio.Lock()):
            await self._unplug(vm.id, device)

    # -- QMP transactions ------------------------------------------------

    async def _client(self, vm_id: str) -> QmpClient:
        client = self._clients.get(vm_id)
        if client is not None and not client.closed.is_set():
            return client
        path = self.qmp_path(vm_id)
        try:
            client = await QmpClient.connect(path, timeout=CONNECT_TIMEOUT)
        except QmpError as exc:
            raise QemuError(f"cannot reach QEMU for VM {vm_id}: {exc}") from exc
        self._clients[vm_id] = client
        return client

    async def _execute(self, client: QmpClient, name: str, args: dict[str, Any]) -> Any:
        try:
            return await client.execute(name, args)
        except QmpCommandError as exc:
            raise QemuError(f"QEMU refused {name}: {exc.desc}") from exc
        except QmpError as exc:
            raise QemuError(f"QEMU {name} failed: {exc}") from exc

    async def _plug(self, vm_id: str, device: Device) -> None:
        iface = device.iface
        if iface not in DRIVERS:
            raise QemuError(f"no QEMU device for interface {iface!r}")
        image = await self._create_image(device.disk_id, device.size or DEFAULT_DISK_SIZE)
        client = await self._client(vm_id)
        node = node_name(device)
        blockdev = {
            "driver": "qcow2",
            "node-name": node,
            "file": {"driver": "file", "filename": str(image)},
        }
        await self._execute(client, "blockdev-add", blockdev)
        try:
            args = await self._device_args(client, device, node)
            await self._execute(client, "device_add", args)
        except BaseException:
            with contextlib.suppress(QemuError):
                await self._execute(client, "blockdev-del", {"node-name": node})
            raise
        log.info("VM %s: plugged %s as %s (%s)", vm_id, device.disk_id, qdev_id(device), iface)

    async def _device_args(self, client: QmpClient, device: Device, node: str) -> dict[str, Any]:
        iface = device.iface
        args = {
            "driver": DRIVERS[iface],
            "id": qdev_id(device),
            "drive": node,
            "serial": device.serial,
        }
        if iface in ("virtio", "nvme"):
            args["bus"] = await self._free_root_port(client, device.disk_id)
        elif iface == "virtio_scsi":
            args["bus"] = SCSI_BUS
        return args

    async def _free_root_port(self, client: QmpClient, disk_id: str) -> str:
        # QOM, not query-pci: before the guest's firmware numbers the buses,
        # query-pci shows nothing behind a root port.
        peripherals = await self._execute(client, "qom-list", {"path": PERIPHERALS})
        for port in root_ports(peripherals):
            bus = await self._execute(client, "qom-list", {"path": f"{PERIPHERALS}/{port}/{port}"})
            if bus_is_empty(bus):
                return port
        raise QemuError(f"no free {ROOT_PORT} to plug {disk_id} into")

    async def _unplug(self, vm_id: str, device: Device) -> None:
        client = await self._client(vm_id)
        qid = qdev_id(device)
        gone = client.waiter(lambda e: e.name == "DEVICE_DELETED" and e.data.get("device") == qid)
        try:
            await client.execute("device_del", {"id": qid})
        except QmpCommandError as exc:
            gone.cancel()
            if exc.error_class != "DeviceNotFound":
                raise QemuError(f"QEMU refused device_del: {exc.desc}") from exc
            log.info("VM %s: %s was not in QEMU; treating it as unplugged", vm_id, qid)
        except QmpError as exc:
            gone.cancel()
            raise QemuError(f"QEMU device_del failed: {exc}") from exc
        else:
            try:
                await gone.wait(self._unplug_timeout)
            except TimeoutError:
                raise QemuError(
                    f"the guest did not release {device.disk_id} within {self._unplug_timeout}s"
                ) from None
            except QmpError as exc:
                raise QemuError(f"lost QEMU while unplugging: {exc}") from exc
        with contextlib.suppress(QemuError):  # gone already when the device was never ours
            await self._execute(client, "blockdev-del", {"node-name": node_name(device)})
        log.info("VM %s: unplugged %s", vm_id, device.disk_id)

    async def _create_image(self, disk_id: str, size: int) -> Path:
        """The disk's image, created on first plug (or in its storage domain, this
        same folder, before) and kept for re-plugs."""
        path = self.image_path(disk_id)
        await ensure_qcow2(path, size)
        return path
