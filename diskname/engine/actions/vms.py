"""VMs: listed, created on a host with their root disk, destroyed."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from ...protocol.disks import disk_serial
from ..core.models import DISK_NAME_MAX, Attachment, DiskSpec, VmRow
from ..core.search import Search
from ..errors import MissingReference, VmNotOnHost
from .base import ActionBase

ROOT_INTERFACE = "virtio"


def drive(att: Attachment, serial: str) -> dict[str, Any]:
    """The disk as the host's ``VM.create`` and ``VM.hotplugDisk`` take it."""
    return {
        "diskId": att.disk_id,
        "deviceId": att.device_id,
        "serial": serial,
        "iface": att.interface,
    }


def default_disk_name(vm_name: str, taken: set[str]) -> str:
    """``<vm>_Disk<n>`` with the lowest ``n`` not yet used, as oVirt names a VM's disks."""
    stem = vm_name[: DISK_NAME_MAX - 16] + "_Disk"
    n = 1
    while f"{stem}{n}" in taken:
        n += 1
    return f"{stem}{n}"


def new_attachment(vm_id: str, disk_id: str, interface: str) -> Attachment:
    return Attachment(vm_id, disk_id, str(uuid.uuid4()), interface, False, None, None, None, None)


class VmActions(ActionBase):
    async def vms(self, names: Search | None = None, limit: int | None = None) -> list[VmRow]:
        return await self._store.list_vms(names, limit)

    async def create_vm(self, name: str, host_id: str, vm_id: str | None = None) -> VmRow:
        if await self._store.get_host(host_id) is None:
            raise MissingReference(f"host.id {host_id}: no such host")
        monitor = self._monitor(host_id)
        vm = VmRow(vm_id or str(uuid.uuid4()), name, "unknown", host_id)
        disk_id = str(uuid.uuid4())
        root = new_attachment(vm.id, disk_id, ROOT_INTERFACE)
        root_disk = DiskSpec(default_disk_name(name, set()))
        pid = self._monitors.engine_pid
        await self._store.create_vm(vm, root, disk_serial(disk_id), root_disk, pid)
        async with monitor.vm_action(vm.id):
            device = drive(root, disk_serial(disk_id)) | {"type": "disk"}
            params = {"vmId": vm.id, "name": name, "devices": [device]}
            try:
                await monitor.call("VM.create", params)
            except Exception:
                await self._store.delete_vm(vm.id)
                await self._store.delete_disk(disk_id)
                raise
            await self._store.mark_plugged(vm.id, disk_id, root.device_id, None)
        return vm

    async def destroy_vm(self, vm_id: str, *, force: bool = False) -> None:
        """Destroy the VM on its host and forget it; with ``force``, forget it even
        when the host cannot be reached or refuses."""
        vm = await self.vm(vm_id)
        async with self._on_host(vm.host_id, vm_id, force) as monitor:
            if monitor is not None:
                async with self._unless_forced(force, f"VM {vm_id} removed"):
                    with contextlib.suppress(VmNotOnHost):  # gone already: as destroyed as it gets
                        await monitor.call("VM.destroy", {"vmId": vm_id})
            await self._store.delete_vm(vm_id)
