"""Disks, clusters and name history: what users look up beside VMs and their attachments."""

from __future__ import annotations

import logging

from ..core.models import Disk, NameChange
from ..core.search import Search
from ..db.catalog import ClusterRow, DiskRow
from ..errors import NotFound
from .base import ActionBase

log = logging.getLogger(__name__)


class CatalogActions(ActionBase):
    # -- disks -------------------------------------------------------------------

    async def disks(self, names: Search | None = None, limit: int | None = None) -> list[Disk]:
        return await self._store.list_disks(names, limit)

    async def disk(self, disk_id: str) -> Disk:
        disk = await self._store.get_disk(disk_id)
        if disk is None:
            raise NotFound(f"no disk {disk_id}")
        return disk

    async def disk_uses(self, *, disk_id: str | None, serial: str | None) -> list[DiskRow]:
        """Disks by id, or by the serial a guest shows, with where they are attached."""
        return await self._catalog.disks(disk_id=disk_id, serial=serial)

    # -- clusters ----------------------------------------------------------------

    async def clusters(self) -> list[ClusterRow]:
        return await self._catalog.clusters()

    async def cluster(self, cluster_id: str) -> ClusterRow:
        return await self._catalog.cluster(cluster_id)

    async def update_cluster(
        self, cluster_id: str, name: str | None, version: str | None
    ) -> ClusterRow:
        """Rename or re-version a cluster; a new version applies within one refresh.

        Names are kept only from 3.5 on (SPEC §6): the cluster's VMs are fetched and
        stored again, so raising the version names their disks and lowering it drops
        the names, although the hosts report nothing new.
        """
        before = await self._catalog.cluster(cluster_id)
        cluster, host_ids = await self._catalog.update_cluster(cluster_id, name, version)
        if cluster.compatibility_version != before.compatibility_version:
            log.info(
                "cluster %s: compatibility version %s -> %s, fetching its VMs again",
                cluster.name,
                before.compatibility_version,
                cluster.compatibility_version,
            )
            await self._monitors.refetch_hosts(host_ids)
        return cluster

    # -- history -----------------------------------------------------------------

    async def history(self, vm_id: str, disk_id: str, limit: int) -> list[NameChange]:
        """The attachment's names, newest first (as long as the disk is attached)."""
        await self._attachment((await self.vm(vm_id)).id, disk_id)
        return await self._catalog.history(vm_id, disk_id, limit)

    async def vm_history(
        self, vm_id: str, name: str | None, disk_id: str | None, limit: int
    ) -> list[NameChange]:
        """The VM's names, newest first, by the name given (a former name too) or by disk,
        detached disks included (SPEC §17)."""
        vm = await self.vm(vm_id)
        return await self._catalog.vm_history(vm.id, name, disk_id, limit)
