"""What the engine asks of hosts on a user's behalf: create VMs, plug and unplug disks.

Each action runs under the VM's :meth:`HostMonitor.vm_action`, calls the host
over the monitor's connection, then records the outcome. A failed host call
undoes the rows written for it. Failures are the engine's own errors
(:mod:`..errors`); the HTTP edges map them to statuses.

Hot-plugs come in bursts, so their writes are batched (:mod:`..db.batching`): the
VM look-ups, the claims and the outcomes of requests that arrive together each
share one query or statement (:mod:`..db.plugs`), and their host calls go out side
by side on the host's connection, which the host serves concurrently. Each
request still waits for its own VM's lock and gets its own answer or error. A
direct LUN and ``PUT active=true`` keep the one-at-a-time path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Mapping
from typing import Any

from ..core.matching import disk_serial
from ..core.models import DISK_NAME_MAX, Attachment, DiskSpec, NameChange, VmRow, canonical_uuid
from ..db.batching import Coalescer
from ..db.plugs import Claim, Outcome
from ..db.store import Store
from ..errors import DeviceNotOnVm, HostNotConnected, NotFound, Unprocessable, VmNotOnHost
from ..events import EventHub
from ..hosts.fleet import Monitors
from ..hosts.monitor import HostMonitor
from ..metrics import Metrics

INTERFACES = frozenset({"virtio", "virtio_scsi", "sata", "nvme"})
ROOT_INTERFACE = "virtio"


def _device_json(att: Attachment, serial: str) -> dict[str, Any]:
    return {
        "deviceId": att.device_id,
        "diskId": att.disk_id,
        "serial": serial,
        "iface": att.interface,
        "type": "disk",
    }


def _returned_device(result: Any, asked: str) -> tuple[str, str | None]:
    """The device id (``asked`` unless the host says) and address the host gave the disk."""
    if not isinstance(result, Mapping):
        return asked, None
    try:
        device_id = canonical_uuid(result.get("deviceId", asked))
    except ValueError:
        device_id = asked
    address = result.get("address")
    return device_id, address if isinstance(address, str) and address else None


def default_disk_name(vm_name: str, taken: set[str]) -> str:
    """``<vm>_Disk<n>`` with the lowest ``n`` not yet used, as oVirt names a VM's disks."""
    stem = vm_name[: DISK_NAME_MAX - 16] + "_Disk"
    n = 1
    while f"{stem}{n}" in taken:
        n += 1
    return f"{stem}{n}"


def _new_attachment(vm_id: str, disk_id: str, interface: str) -> Attachment:
    return Attachment(vm_id, disk_id, str(uuid.uuid4()), interface, False, None, None, None, None)


class Actions:
    """The engine's write operations behind the REST API."""

    def __init__(self, store: Store, monitors: Monitors, metrics: Metrics, hub: EventHub) -> None:
        self._store, self._monitors, self._metrics, self._hub = store, monitors, metrics, hub
        self._vms: Coalescer[str, VmRow] = Coalescer(store.get_vms)
        self._disk_names: Coalescer[str, set[str]] = Coalescer(store.disk_names)
        self._claims: Coalescer[Claim, str] = Coalescer(store.claim_plugs)
        self._outcomes: Coalescer[Outcome, Attachment | None] = Coalescer(store.settle_plugs)

    async def vm(self, vm_id: str) -> VmRow:
        return await self._vms.submit(vm_id)  # or NotFound

    async def attachment(self, vm_id: str, disk_id: str) -> Attachment:
        att = await self._store.get_attachment(vm_id, disk_id)
        if att is None:
            raise NotFound(f"disk {disk_id} is not attached to VM {vm_id}")
        return att

    def _monitor(self, host_id: str) -> HostMonitor:
        monitor = self._monitors.get(host_id)
        if monitor is None:
            raise HostNotConnected(f"host {host_id} is not monitored by this engine")
        return monitor

    async def _call(self, monitor: HostMonitor, method: str, params: dict[str, Any]) -> Any:
        return await monitor.call(method, params)

    def _published(self, change: NameChange | None) -> None:
        if change is not None:
            self._hub.publish(change.to_json())

    # -- VMs ---------------------------------------------------------------

    async def create_vm(self, name: str, host_id: str, vm_id: str | None = None) -> VmRow:
        if await self._store.get_host(host_id) is None:
            raise Unprocessable(f"host.id {host_id}: no such host")
        monitor = self._monitor(host_id)
        vm = VmRow(vm_id or str(uuid.uuid4()), name, "unknown", host_id)
        disk_id = str(uuid.uuid4())
        root = _new_attachment(vm.id, disk_id, ROOT_INTERFACE)
        root_disk = DiskSpec(default_disk_name(name, set()))
        await self._store.create_vm(vm, root, disk_serial(disk_id), root_disk)
        async with monitor.vm_action(vm.id):
            params = {
                "vmId": vm.id,
                "name": name,
                "devices": [_device_json(root, disk_serial(disk_id))],
            }
            try:
                await self._call(monitor, "VM.create", params)
            except Exception:
                await self._store.delete_vm(vm.id)
                await self._store.delete_disk(disk_id)
                raise
            await self._store.mark_plugged(vm.id, disk_id, root.device_id, None)
        return vm

    async def destroy_vm(self, vm_id: str) -> None:
        vm = await self.vm(vm_id)
        monitor = self._monitor(vm.host_id)
        async with monitor.vm_action(vm_id):
            with contextlib.suppress(VmNotOnHost):  # gone already: as destroyed as it gets
                await self._call(monitor, "VM.destroy", {"vmId": vm_id})
            await self._store.delete_vm(vm_id)

    # -- disks ---------------------------------------------------------------

    async def add_attachment(
        self,
        vm_id: str,
        disk_id: str | None,
        interface: str,
        active: bool,
        requested_at: float,
        *,
        new_disk: DiskSpec | None = None,
        lun_serial: str | None = None,
    ) -> Attachment:
        """Attach an existing disk, or a new one when ``disk_id`` is None; plug it if active.

        A new disk takes ``new_disk``'s name and size; by default it is named
        ``<vm>_Disk<n>`` and sized :data:`.models.DEFAULT_DISK_SIZE`. With
        ``lun_serial`` it is a direct LUN: it keeps the LUN's own serial (SPEC §2)
        instead of taking its id's first 20 characters.
        """
        vm = await self.vm(vm_id)
        spec = None if disk_id is not None else new_disk or await self._default_disk(vm)
        if active and lun_serial is None:
            return await self._attach_plugged(vm, disk_id, interface, spec, requested_at)
        if spec is not None and lun_serial is not None:
            spec = dataclasses.replace(spec, lun_serial=lun_serial)
        disk_id = disk_id or str(uuid.uuid4())
        if spec is not None:
            serial: str | None = spec.lun_serial or disk_serial(disk_id)
        else:
            serial = await self._store.disk_serial(disk_id)
        if serial is None:
            raise Unprocessable(f"disk.id {disk_id}: no such disk")
        monitor = self._monitor(vm.host_id)
        att = _new_attachment(vm_id, disk_id, interface)
        async with monitor.vm_action(vm_id):
            await self._store.attach(att, serial, spec, plug=active)
            if active:
                try:
                    await self._plug(monitor, att, serial, requested_at)
                except Exception:
                    await self._store.detach(vm_id, disk_id)
                    if spec:
                        await self._store.delete_disk(disk_id)
                    raise
        return await self.attachment(vm_id, disk_id)

    async def _attach_plugged(
        self,
        vm: VmRow,
        disk_id: str | None,
        interface: str,
        spec: DiskSpec | None,
        requested_at: float,
    ) -> Attachment:
        """Attach and hot-plug: claim, call the host, record the outcome (each batched)."""
        monitor = self._monitor(vm.host_id)
        disk_id = disk_id or str(uuid.uuid4())
        new = (disk_serial(disk_id), spec.name, spec.provisioned_size) if spec else None
        claim = Claim(vm.id, disk_id, str(uuid.uuid4()), interface, *(new or (None, None, 0)))
        async with monitor.vm_action(vm.id, plug=True):
            serial = await self._claims.submit(claim)  # or Conflict, NotFound
            self._metrics.plug_requested(vm.id, disk_id, requested_at)
            drive = {"diskId": disk_id, "deviceId": claim.device_id, "serial": serial}
            try:
                result = await self._call(
                    monitor,
                    "VM.hotplugDisk",
                    {"vmId": vm.id, "drive": drive | {"iface": interface}},
                )
            except Exception:
                self._metrics.plug_abandoned(vm.id, disk_id)
                await self._outcomes.submit(Outcome(claim, failed=True))
                raise
            device_id, address = _returned_device(result, claim.device_id)
            att = await self._outcomes.submit(Outcome(claim, device_id, address))  # or NotFound
        assert att is not None  # only a failed outcome settles to None
        return att

    async def _default_disk(self, vm: VmRow) -> DiskSpec:
        taken = await self._disk_names.submit(vm.id)  # requests together: one query
        return DiskSpec(default_disk_name(vm.name, taken))

    async def set_active(
        self, vm_id: str, disk_id: str, active: bool, requested_at: float
    ) -> Attachment:
        vm = await self.vm(vm_id)
        monitor = self._monitor(vm.host_id)
        async with monitor.vm_action(vm_id):
            att = await self.attachment(vm_id, disk_id)
            if att.active != active:
                if active:
                    serial = await self._store.disk_serial(disk_id) or disk_serial(disk_id)
                    fresh = dataclasses.replace(att, device_id=str(uuid.uuid4()))
                    await self._plug(monitor, fresh, serial, requested_at)
                else:
                    await self._unplug(monitor, att)
                    self._published(await self._store.mark_unplugged(vm_id, disk_id))
        return await self.attachment(vm_id, disk_id)

    async def detach(self, vm_id: str, disk_id: str) -> None:
        vm = await self.vm(vm_id)
        monitor = self._monitor(vm.host_id)
        async with monitor.vm_action(vm_id):
            att = await self.attachment(vm_id, disk_id)
            if att.active:
                await self._unplug(monitor, att, discard=True)
            self._published(await self._store.detach(vm_id, disk_id))

    async def _plug(
        self, monitor: HostMonitor, att: Attachment, serial: str, requested_at: float
    ) -> None:
        await self._store.claim_plug(att.vm_id, att.disk_id, att.device_id)  # or Conflict
        self._metrics.plug_requested(att.vm_id, att.disk_id, requested_at)
        drive = {
            "diskId": att.disk_id,
            "deviceId": att.device_id,
            "serial": serial,
            "iface": att.interface,
        }
        try:
            result = await self._call(
                monitor, "VM.hotplugDisk", {"vmId": att.vm_id, "drive": drive}
            )
        except Exception:
            self._metrics.plug_abandoned(att.vm_id, att.disk_id)
            await self._store.release_plug(att.vm_id, att.disk_id)
            raise
        device_id, address = _returned_device(result, att.device_id)
        await self._store.mark_plugged(att.vm_id, att.disk_id, device_id, address)

    async def _unplug(self, monitor: HostMonitor, att: Attachment, discard: bool = False) -> None:
        self._metrics.plug_abandoned(att.vm_id, att.disk_id)
        params: dict[str, Any] = {"vmId": att.vm_id, "diskId": att.disk_id}
        if discard:  # detached for good: the host may remove the disk's image
            params["discard"] = True
        # A host that no longer has the device: it is as unplugged as it gets.
        with contextlib.suppress(DeviceNotOnVm):
            await self._call(monitor, "VM.hotunplugDisk", params)
