"""What every action shares: the store, the monitors, look-ups that raise NotFound, the hub."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from ..core.models import Attachment, NameChange, StorageDomain, VmRow
from ..db.batching import Coalescer
from ..db.catalog import Catalog
from ..db.images import ImageIntents
from ..db.storage import StorageTables
from ..db.store import Store
from ..errors import (
    Conflict,
    EngineError,
    HostCallFailed,
    HostNotConnected,
    HostRefused,
    HostTimeout,
    NotFound,
)
from ..events import EventHub
from ..hosts.fleet import Monitors
from ..hosts.monitor import HostMonitor
from ..metrics import Metrics
from .images import Images

log = logging.getLogger(__name__)

# What a host can fail a call with: by force, the engine forgets without its word.
HOST_FAILURES = (HostNotConnected, HostRefused, HostCallFailed, HostTimeout)


class ActionBase:
    def __init__(self, store: Store, monitors: Monitors, metrics: Metrics, hub: EventHub) -> None:
        self._store, self._monitors, self._metrics, self._hub = store, monitors, metrics, hub
        self._catalog = Catalog(store.pool, metrics)
        self._storage = StorageTables(store.pool, metrics)
        # Floating disks' images being made, and those a gone engine left (SPEC §18).
        self._images = Images(ImageIntents(store.pool, metrics), monitors)
        # Requests that arrive together look their VMs up in one query.
        self._vms: Coalescer[str, VmRow] = Coalescer(store.get_vms)

    async def resume_images(self) -> None:
        """Resolve the floating disks gone engines left locked, as balancing rounds find them."""
        await self._images.run(self._monitors.images_left)

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

    async def _drop_image(self, domain: StorageDomain, disk_id: str) -> None:
        """Ask the domain's host to remove a removed disk's image (logged if it cannot)."""
        params = {"storageDomain": domain.name, "diskId": disk_id}
        try:
            await self._monitor(domain.host_id).call("Image.delete", params)
        except EngineError as exc:  # the disk is gone; its image is left behind
            log.warning("disk %s removed, its image in %s stays: %s", disk_id, domain.name, exc)

    def _monitor(self, host_id: str) -> HostMonitor:
        monitor = self._monitors.get(host_id)
        if monitor is None:
            raise HostNotConnected(f"host {host_id} is not monitored by this engine")
        return monitor

    @contextlib.asynccontextmanager
    async def _on_host(
        self, host_id: str, vm_id: str, force: bool
    ) -> AsyncIterator[HostMonitor | None]:
        """The VM's host monitor, under the VM's action lock; with ``force``, None when
        this engine has no monitor of the host (the host was not asked)."""
        try:
            monitor = self._monitor(host_id)
        except HostNotConnected:
            if not force:
                raise
            yield None
            return
        async with monitor.vm_action(vm_id):
            yield monitor

    @staticmethod
    @contextlib.asynccontextmanager
    async def _unless_forced(force: bool, what: str) -> AsyncIterator[None]:
        """A host call that, with ``force``, may fail: the engine forgets all the same.

        An admin can always clear what an unreachable, untrusted or lying host
        holds (SPEC §19); the host may still have it, and is told nothing more.
        """
        try:
            yield
        except HostNotConnected as exc:
            if not force:
                raise HostNotConnected(f"{exc}: with force=true it is {what} all the same") from exc
            log.warning("%s by force, without the host's word: %s", what, exc)
        except HOST_FAILURES as exc:
            if not force:
                raise
            log.warning("%s by force, without the host's word: %s", what, exc)

    def _published(self, change: NameChange | None) -> None:
        if change is not None:
            self._hub.publish(change.to_json())
