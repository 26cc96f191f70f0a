"""The reads both API edges and the actions make: hosts, VMs, attachments, disks."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.models import Attachment, Disk, HostRow, VmRow
from ..core.search import Search
from ..errors import NotFound
from .rows import ATTACHMENTS, DISKS, HOST_COLUMNS, VMS, Tables, attachment, disk, filtered


class Queries(Tables):
    # -- hosts ------------------------------------------------------------

    async def list_hosts(
        self, search: Search | None = None, limit: int | None = None
    ) -> list[HostRow]:
        sql, args = filtered(f"SELECT {HOST_COLUMNS} FROM hosts", search, limit, "name", "hosts")
        return [HostRow(*r.values()) for r in await self._pool.fetch(sql, *args)]

    async def get_host(self, host_id: str) -> HostRow | None:
        row = await self._pool.fetchrow(f"SELECT {HOST_COLUMNS} FROM hosts WHERE id = $1", host_id)
        return HostRow(*row.values()) if row else None

    # -- VMs --------------------------------------------------------------

    async def list_vms(self, names: Search | None = None, limit: int | None = None) -> list[VmRow]:
        sql, args = filtered(VMS, names, limit, "name, id")
        return [VmRow(*r.values()) for r in await self._pool.fetch(sql, *args)]

    async def get_vms(self, vm_ids: Sequence[str]) -> list[VmRow | Exception]:
        """Each VM, or :class:`NotFound` in its place (one query for them all)."""
        rows = await self._pool.fetch(f"{VMS} WHERE id = ANY($1::uuid[])", list(vm_ids))
        found = {r["id"]: VmRow(*r.values()) for r in rows}
        return [found.get(vm_id) or NotFound(f"no VM {vm_id}") for vm_id in vm_ids]

    async def get_vm(self, vm_id: str) -> VmRow | None:
        row = await self._pool.fetchrow(f"{VMS} WHERE id = $1", vm_id)
        return VmRow(*row.values()) if row else None

    async def disk_names(self, vm_ids: Sequence[str]) -> list[set[str]]:
        """The names of the disks attached to each VM (one query for them all)."""
        rows = await self._pool.fetch(
            """SELECT vd.vm_id::text, d.name FROM vm_device vd JOIN disks d ON d.id = vd.disk_id
               WHERE vd.vm_id = ANY($1::uuid[])""",
            sorted(set(vm_ids)),
        )
        names: dict[str, set[str]] = {vm: set() for vm in vm_ids}
        for r in rows:
            if r["name"] is not None:
                names[r["vm_id"]].add(r["name"])
        return [names[vm] for vm in vm_ids]

    # -- attachments --------------------------------------------------------

    async def list_attachments(self, vm_id: str) -> list[Attachment]:
        return await self.attachments_of([vm_id])

    async def attachments_of(self, vm_ids: Sequence[str]) -> list[Attachment]:
        """The attachments of several VMs in one query, by VM then disk."""
        rows = await self._pool.fetch(
            f"{ATTACHMENTS} WHERE vd.vm_id = ANY($1::uuid[]) ORDER BY vd.vm_id, vd.disk_id",
            list(vm_ids),
        )
        return [attachment(r) for r in rows]

    async def get_attachment(self, vm_id: str, disk_id: str) -> Attachment | None:
        row = await self._pool.fetchrow(
            f"{ATTACHMENTS} WHERE vd.vm_id = $1 AND vd.disk_id = $2", vm_id, disk_id
        )
        return attachment(row) if row else None

    async def get_attachments(
        self, keys: Sequence[tuple[str, str]]
    ) -> list[Attachment | Exception]:
        """Each (VM, disk) attachment, or :class:`NotFound` in its place (one query)."""
        vm_ids, disk_ids = [k[0] for k in keys], [k[1] for k in keys]
        rows = await self._pool.fetch(
            f"{ATTACHMENTS} WHERE (vd.vm_id, vd.disk_id) IN"
            " (SELECT * FROM unnest($1::uuid[], $2::uuid[]))",
            vm_ids,
            disk_ids,
        )
        found = {(a.vm_id, a.disk_id): a for a in map(attachment, rows)}
        return [found.get(k) or NotFound(f"disk {k[1]} is not attached to VM {k[0]}") for k in keys]

    # -- disks ----------------------------------------------------------------

    async def list_disks(self, names: Search | None = None, limit: int | None = None) -> list[Disk]:
        sql, args = filtered(DISKS, names, limit, "d.name, d.id", "disks")
        return [disk(r[0], list(r.values())[1:]) for r in await self._pool.fetch(sql, *args)]

    async def get_disk(self, disk_id: str) -> Disk | None:
        row = await self._pool.fetchrow(f"{DISKS} WHERE id = $1", disk_id)
        return disk(row[0], list(row.values())[1:]) if row else None

    async def disk_users(self, disk_id: str) -> list[str]:
        """The VMs the disk is attached to."""
        rows = await self._pool.fetch(
            "SELECT vm_id::text FROM vm_device WHERE disk_id = $1 ORDER BY vm_id", disk_id
        )
        return [r["vm_id"] for r in rows]

    async def disk_serial(self, disk_id: str) -> str | None:
        """The disk's serial, or None when there is no such disk."""
        serial: str | None = await self._pool.fetchval(
            "SELECT serial FROM disks WHERE id = $1", disk_id
        )
        return serial
