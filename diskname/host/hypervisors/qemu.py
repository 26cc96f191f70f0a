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

Guest resets: from the VM's start the host keeps its QMP connection open
(reconnecting while QEMU is not there) and hears QMP ``RESET`` (a reboot,
``system_reset``) and ``SHUTDOWN``. The agent's channel stays connected across
a reboot, so this is how the host learns that the guest's names may no longer
hold: the VM's guest sources are reset (SPEC §17, ``Inventory.guest_reset``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from pathlib import Path
from typing import Any

from ...protocol import qmp
from ...protocol.disks import DEFAULT_DISK_SIZE
from ..devices import Device
from ..qmp_client import QmpClient, QmpCommandError, QmpError
from ..vm import VmState
from .base import HypervisorError, Inventory, StaticInventory
from .images import ensure_qcow2

log = logging.getLogger(__name__)

QMP_SUFFIX = ".qmp"
SCSI_BUS = "scsi0.0"
CONNECT_TIMEOUT = 5.0
UNPLUG_TIMEOUT = 10.0
DRIVERS = {"virtio": "virtio-blk-pci", "nvme": "nvme", "virtio_scsi": "scsi-hd", "sata": "ide-hd"}
ROOT_PORT = "pcie-root-port"
PERIPHERALS = "/machine/peripheral"
# QMP events after which the guest's names may no longer hold.
RESETS = {"RESET": "the guest reset", "SHUTDOWN": "the guest shut down"}
WATCH_BACKOFF = (0.1, 2.0)  # reconnecting to a VM's QMP socket while QEMU is away


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
        self._connecting: dict[str, asyncio.Lock] = {}  # one QMP connection per VM
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._inventory: Inventory | None = None

    def qmp_path(self, vm_id: str) -> Path:
        return qmp_path(self._channels, vm_id)

    def image_path(self, disk_id: str) -> Path:
        return self._images / f"{disk_id}.qcow2"

    async def run(self, inventory: Inventory) -> None:
        self._inventory = inventory  # told of guest resets; the watchers run per VM

    async def start_vm(self, vm: VmState) -> None:
        # QEMU runs the VM; the host keeps its QMP connection to hear its events.
        self._locks.setdefault(vm.id, asyncio.Lock())
        if vm.id not in self._watchers:
            self._watchers[vm.id] = asyncio.create_task(self._watch(vm.id), name=f"qmp {vm.id}")

    async def stop_vm(self, vm_id: str) -> None:
        watcher = self._watchers.pop(vm_id, None)
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        client = self._clients.pop(vm_id, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        for vm_id in {*self._clients, *self._watchers}:
            await self.stop_vm(vm_id)

    async def hotplug(self, vm: VmState, device: Device) -> Device:
        async with self._locks.setdefault(vm.id, asyncio.Lock()):
            await self._plug(vm.id, device)
        return device

    async def hotunplug(self, vm: VmState, device: Device) -> None:
        async with self._locks.setdefault(vm.id, asyncio.Lock()):
            await self._unplug(vm.id, device)

    # -- QMP transactions ------------------------------------------------

    async def _watch(self, vm_id: str) -> None:
        """Keep the VM's QMP connection (plugs share it) so its events are heard."""
        backoff = WATCH_BACKOFF[0]
        while True:
            try:
                client = await self._client(vm_id)
            except QemuError:
                await asyncio.sleep(backoff)  # sync-ok: QEMU is not running (yet)
                backoff = min(backoff * 2, WATCH_BACKOFF[1])
                continue
            backoff = WATCH_BACKOFF[0]
            await client.closed.wait()

    def _event(self, vm_id: str, event: qmp.Event) -> None:
        why = RESETS.get(event.name)
        if why is None or self._inventory is None:
            return
        reason = event.data.get("reason")
        if isinstance(reason, str):
            why = f"{why}: {reason[:40]}"
        self._inventory.guest_reset(vm_id, f"QMP {event.name}, {why}")

    async def _client(self, vm_id: str) -> QmpClient:
        async with self._connecting.setdefault(vm_id, asyncio.Lock()):
            client = self._clients.get(vm_id)
            if client is not None and not client.closed.is_set():
                return client
            path = self.qmp_path(vm_id)
            try:
                client = await QmpClient.connect(path, timeout=CONNECT_TIMEOUT)
            except QmpError as exc:
                raise QemuError(f"cannot reach QEMU for VM {vm_id}: {exc}") from exc
            client.listen(lambda event: self._event(vm_id, event))
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
