"""Storage domains as their hosts last listed them, and floating disks (SPEC §18)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from ...protocol.storage_wire import StorageDomainInfo
from ..core.models import DiskSpec, StorageDomain, storage_domain_id
from ..core.search import Search
from ..errors import Conflict, MissingReference
from . import images
from .rows import Tables, filtered

_DOMAINS = "SELECT sd.id::text, sd.host_id::text, sd.name, sd.kind, sd.available, sd.used"
_FROM = " FROM storage_domains sd"
_UPSERT = """
INSERT INTO storage_domains (id, host_id, name, kind, available, used, seen_at)
SELECT u.id, $1, u.name, u.kind, u.available, u.used, now()
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
    AS u(id, name, kind, available, used)
ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, available = EXCLUDED.available,
    used = EXCLUDED.used, seen_at = now()
WHERE (storage_domains.kind, storage_domains.available, storage_domains.used)
    IS DISTINCT FROM (EXCLUDED.kind, EXCLUDED.available, EXCLUDED.used)
"""


class StorageTables(Tables):
    async def store_domains(self, host_id: str, domains: Sequence[StorageDomainInfo]) -> None:
        """The host's domains as it lists them now (a domain it no longer lists stays)."""
        ids = [storage_domain_id(host_id, d.name) for d in domains]
        columns = ([d.name for d in domains], [d.kind for d in domains])
        sizes = ([d.available for d in domains], [d.used for d in domains])
        async with self._pool.acquire() as conn:
            await self._exec(conn, _UPSERT, host_id, ids, *columns, *sizes)

    async def domains(
        self, search: Search | None = None, limit: int | None = None
    ) -> list[StorageDomain]:
        sql, args = filtered(_DOMAINS + _FROM, search, limit, "sd.name, sd.id", "storagedomains")
        return [StorageDomain(*r.values()) for r in await self._pool.fetch(sql, *args)]

    async def domain(self, domain_id: str) -> StorageDomain | None:
        row = await self._pool.fetchrow(f"{_DOMAINS}{_FROM} WHERE sd.id = $1", domain_id)
        return StorageDomain(*row.values()) if row else None

    async def domains_named(self, name: str) -> list[StorageDomain]:
        rows = await self._pool.fetch(f"{_DOMAINS}{_FROM} WHERE sd.name = $1 ORDER BY id", name)
        return [StorageDomain(*r.values()) for r in rows]

    async def add_floating_disk(
        self, disk_id: str, serial: str, spec: DiskSpec, domain_id: str, engine_pid: int | None
    ) -> None:
        """A new disk attached nowhere, "locked" until its image exists, with the intent
        of the engine making that image (:mod:`.images`), in one transaction."""
        sql = """INSERT INTO disks (id, serial, name, provisioned_size, status,
                                    storage_domain_id, format, sparse)
                 VALUES ($1, $2, $3, $4, 'locked', $5, $6, $7)"""
        args = (spec.name, spec.provisioned_size, domain_id, spec.format, spec.sparse)
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await self._exec(conn, sql, disk_id, serial, *args)
                await self._exec(conn, images.RECORD_SQL, disk_id, engine_pid)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"disk {disk_id} exists") from None
            except asyncpg.ForeignKeyViolationError:
                raise MissingReference(f"storage domain {domain_id}: no such domain") from None

    async def placement(self, disk_id: str) -> tuple[StorageDomain, Any] | None:
        """The floating disk's domain and its row (status, size); None for other disks."""
        row = await self._pool.fetchrow(
            f"""{_DOMAINS}, d.status, d.provisioned_size
                FROM disks d JOIN storage_domains sd ON sd.id = d.storage_domain_id
                WHERE d.id = $1""",
            disk_id,
        )
        if row is None:
            return None
        values = list(row.values())
        return StorageDomain(*values[:6]), {"status": values[6], "size": values[7]}
