"""What every action shares: the store, the monitors, look-ups that raise NotFound, the hub."""

from __future__ import annotations

import asyncio
from typing import Any

from ..core.models import Attachment, NameChange, VmRow
from ..db.batching import Coalescer
from ..db.catalog import Catalog
from ..db.storage import StorageTables
from ..db.store import Store
from ..errors import Conflict, HostNotConnected, NotFound
from ..events import EventHub
from ..hosts.fleet import Monitors
from ..hosts.monitor import HostMonitor
from ..metrics import Metrics


class ActionBase:
    def __init__(self, store: Store, monitors: Monitors, metrics: Metrics, hub: EventHub) -> None:
        self._store, self._monitors, self._metrics, self._hub = store, monitors, metrics, hub
        self._catalog = Catalog(store.pool, metrics)
        self._storage = StorageTables(store.pool, metrics)
        self._image_tasks: set[asyncio.Task[None]] = set()  # floating disks' images being made
        # Requests that arrive together look their VMs up in one query.
        self._vms: Coalescer[str, VmRow] = Coalescer(store.get_vms)

    async def vm(self, vm_id: str) -> VmRow:
        """The VM, or :class:`NotFound`."""
        return await self._vms.submit(vm_id)

    async def _attachment(self, vm_id: str, disk_id: str) -> Attachment:
        att = await self._store.get_attachment(vm_id, disk_id)
        if att is None:
            raise NotFound(f"disk {disk_id} is not attached to VM {vm_id}")
        return att

    async def _image_fields(self, vm: VmRow, disk_id: str) -> dict[str, Any]:
        """What a plug of an existing disk tells the host of its image: for a floating
        disk its domain and size (:class:`Conflict` if that image cannot be plugged)."""
        placed = await self._storage.placement(disk_id)
        if placed is None:
            return {}
        domain, disk = placed
        if domain.host_id != vm.host_id:
            raise Conflict(
                f"disk {disk_id}'s image is in storage domain {domain.name!r} of host "
                f"{domain.host_id}: it can only be plugged into that host's VMs"
            )
        if disk["status"] != "ok":
            raise Conflict(f"disk {disk_id} is {disk['status']}: its image is not ready")
        return {"size": disk["size"], "storageDomain": domain.name}

    def _monitor(self, host_id: str) -> HostMonitor:
        monitor = self._monitors.get(host_id)
        if monitor is None:
            raise HostNotConnected(f"host {host_id} is not monitored by this engine")
        return monitor

    def _published(self, change: NameChange | None) -> None:
        if change is not None:
            self._hub.publish(change.to_json())
