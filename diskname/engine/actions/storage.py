"""Storage domains and floating disks: listed, created in a domain, deleted (SPEC §18).

A domain is where one host creates images (a libvirt pool, a directory, memory
on a sim host); the engine stores the hosts' listings (each refreshed when the
domains are listed) so disks can name their domain and searches can join it.
A floating disk is stored "locked", its image is made by the host in the
background, then the disk is "ok" (or "illegal", with the host's reason); one
an engine left locked when it died is resumed by another (:mod:`.images`).
Attaching it (by id, :mod:`.attachments`) plugs that image: only into a VM of
the same host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from ...protocol.disks import disk_serial
from ...protocol.storage_wire import BadHostMessage, ImageRequest, parse_domains
from ..core.models import Disk, DiskSpec, StorageDomain, canonical_uuid
from ..core.search import Search
from ..errors import Conflict, EngineError, MissingReference, NotFound
from .attachments import check_new_disk
from .base import ActionBase

log = logging.getLogger(__name__)
LIST_TIMEOUT = 5.0


class StorageActions(ActionBase):
    # -- domains ---------------------------------------------------------------------

    async def storage_domains(
        self, search: Search | None = None, limit: int | None = None
    ) -> list[StorageDomain]:
        """Every host's domains, asked of the hosts this engine monitors just now."""
        await self._refresh_domains()
        return await self._storage.domains(search, limit)

    async def storage_domain(self, domain_id: str) -> StorageDomain:
        domain = await self._storage.domain(domain_id)
        if domain is None:
            await self._refresh_domains()
            domain = await self._storage.domain(domain_id)
        if domain is None:
            raise NotFound(f"no storage domain {domain_id}")
        return domain

    async def _refresh_domains(self) -> None:
        hosts = [h for h in await self._store.list_hosts() if h.status == "up"]
        await asyncio.gather(*(self._refresh_host(h.id) for h in hosts))

    async def _refresh_host(self, host_id: str) -> None:
        monitor = self._monitors.get(host_id)
        if monitor is None:
            return  # another engine's host: its listing is as that engine stored it
        try:
            async with asyncio.timeout(LIST_TIMEOUT):
                reply = await monitor.call("Host.getStorageDomains")
            domains = parse_domains(reply)
        except (EngineError, TimeoutError, BadHostMessage) as exc:
            log.warning("host %s: storage domains not listed: %s", host_id, exc)
            return
        await self._storage.store_domains(host_id, domains)

    async def _domain_for(self, wanted: str) -> StorageDomain:
        """The domain a new disk names, by id or by name (one of that name)."""
        with contextlib.suppress(ValueError):
            domain_id = canonical_uuid(wanted)
            try:
                return await self.storage_domain(domain_id)
            except NotFound:  # a reference in a body: 422, as a missing host's is
                raise MissingReference(f"storage domain {domain_id}: no such domain") from None
        found = await self._storage.domains_named(wanted)
        if not found:
            await self._refresh_domains()
            found = await self._storage.domains_named(wanted)
        if not found:
            raise MissingReference(f"storage domain {wanted!r}: no such domain")
        if len(found) > 1:
            raise Conflict(f"{len(found)} storage domains are named {wanted!r}: give its id")
        return found[0]

    # -- floating disks --------------------------------------------------------------

    async def create_disk(self, spec: DiskSpec) -> Disk:
        """A disk attached nowhere, its image made by its domain's host ("locked" until then)."""
        check_new_disk(spec)
        if spec.storage_domain is None:
            raise MissingReference("a new disk needs storage_domains: the domain of its image")
        domain = await self._domain_for(spec.storage_domain)
        monitor = self._monitor(domain.host_id)  # HostNotConnected before anything is stored
        disk_id = str(uuid.uuid4())
        pid = self._monitors.engine_pid  # the intent names this engine (:mod:`.images`)
        await self._storage.add_floating_disk(disk_id, disk_serial(disk_id), spec, domain.id, pid)
        request = ImageRequest(
            domain.name, disk_id, spec.provisioned_size, spec.format, spec.sparse
        )
        self._images.start(monitor, request, pid)
        return await self._disk(disk_id)

    async def delete_disk(self, disk_id: str) -> None:
        """Remove a disk attached to no VM (:class:`Conflict` while attached) and its image."""
        disk = await self._disk(disk_id)
        users = await self._store.disk_users(disk_id)
        if users:
            raise Conflict(f"disk {disk_id} is attached to VM {users[0]}: detach it first")
        if disk.status == "locked":
            raise Conflict(f"disk {disk_id} is locked: its image is being created")
        placed = await self._storage.placement(disk_id)
        if not await self._store.remove_disk(disk_id):
            raise Conflict(f"disk {disk_id} was attached meanwhile")
        if placed is not None:
            await self._drop_image(placed[0], disk_id)

    async def _disk(self, disk_id: str) -> Disk:
        disk = await self._store.get_disk(disk_id)
        if disk is None:
            raise NotFound(f"no disk {disk_id}")
        return disk
