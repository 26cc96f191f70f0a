"""The queries behind the user-feature routes: clusters, name history, disks by serial,
host removal and the replay of missed events. Reads, and small writes that touch no
guest data; the monitor's writes stay in :mod:`.store`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from ..core.models import GuestChange, NameChange
from ..errors import Conflict, NotFound
from .rows import Tables

MIN_SERIAL_PREFIX = 8  # as the matching's rule for serials cut short


@dataclass(frozen=True, slots=True)
class ClusterRow:
    id: str
    name: str
    compatibility_version: str

    def to_json(self, keeps_names: bool) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "compatibility_version": self.compatibility_version,
            "keeps_names": keeps_names,
        }


@dataclass(frozen=True, slots=True)
class DiskUse:
    """Where a disk is attached, and what the guest calls it there."""

    vm_id: str
    vm_name: str
    interface: str
    active: bool
    logical_name: str | None
    logical_name_seen_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        seen = self.logical_name_seen_at
        return {
            "vm": {"id": self.vm_id, "name": self.vm_name},
            "interface": self.interface,
            "active": self.active,
            "logical_name": self.logical_name,
            "logical_name_seen_at": seen.isoformat() if seen else None,
        }


@dataclass(frozen=True, slots=True)
class DiskRow:
    id: str
    serial: str
    storage_type: str
    attachments: tuple[DiskUse, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "serial": self.serial,
            "storage_type": self.storage_type,
            "attachments": [a.to_json() for a in self.attachments],
        }


_FORGET_HASHES = "UPDATE vms SET hash = NULL WHERE host_id = ANY($1::uuid[]) AND hash IS NOT NULL"
_CLUSTERS = "SELECT id::text, name, compatibility_version FROM clusters"
_HISTORY_COLUMNS = (
    "id, vm_id::text, disk_id::text, old_name, new_name, source, changed_at, matched_by"
)
# "Equals, ends with, or (cut short) begins": the matching's serial rules, read backwards.
_DISKS = f"""
SELECT d.id::text AS id, d.serial, d.storage_type, vd.vm_id::text AS vm_id, v.name AS vm_name,
       vd.interface, vd.is_plugged, vd.logical_name, vd.logical_name_seen_at
FROM (SELECT * FROM disks d
      WHERE ($1::uuid IS NULL AND $2::text IS NULL)
         OR ($1::uuid IS NOT NULL AND d.id = $1::uuid)
         OR ($2::text IS NOT NULL AND ($2 = d.serial OR right($2, length(d.serial)) = d.serial
             OR (length($2) >= {MIN_SERIAL_PREFIX} AND left(d.serial, length($2)) = $2)))
      ORDER BY d.id) d
LEFT JOIN vm_device vd ON vd.disk_id = d.id
LEFT JOIN vms v ON v.id = vd.vm_id
ORDER BY d.id, vd.is_plugged DESC, vd.vm_id
"""


def _change(row: Any) -> NameChange:
    return NameChange(
        row["vm_id"],
        row["disk_id"],
        row["old_name"],
        row["new_name"],
        row["source"],
        row["changed_at"],
        matched_by=row["matched_by"],
        id=row["id"],
    )


class Catalog(Tables):
    """Queries over the engine's pool; every statement that changes rows is counted."""

    # -- clusters ------------------------------------------------------------

    async def clusters(self) -> list[ClusterRow]:
        rows = await self._pool.fetch(f"{_CLUSTERS} ORDER BY name")
        return [ClusterRow(*r.values()) for r in rows]

    async def cluster(self, cluster_id: str) -> ClusterRow:
        row = await self._pool.fetchrow(f"{_CLUSTERS} WHERE id = $1", cluster_id)
        if row is None:
            raise NotFound(f"no cluster {cluster_id}")
        return ClusterRow(*row.values())

    async def update_cluster(
        self, cluster_id: str, name: str | None, version: str | None
    ) -> tuple[ClusterRow, list[str]]:
        """Rename or re-version a cluster; a new version also forgets its VMs' hashes.

        Returns the cluster and the ids of its hosts. The hashes go so that every
        VM of the cluster is fetched and stored again under the new version (its
        names kept or dropped) although the hosts report nothing new.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            old = await conn.fetchrow(f"{_CLUSTERS} WHERE id = $1 FOR UPDATE", cluster_id)
            if old is None:
                raise NotFound(f"no cluster {cluster_id}")
            sql = """UPDATE clusters SET name = COALESCE($2, name),
                         compatibility_version = COALESCE($3, compatibility_version)
                     WHERE id = $1"""
            try:
                await self._exec(conn, sql, cluster_id, name, version)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a cluster named {name!r} exists") from None
            hosts = await conn.fetch("SELECT id::text FROM hosts WHERE cluster_id = $1", cluster_id)
            host_ids = [r["id"] for r in hosts]
            if version is not None and version != old["compatibility_version"]:
                await self._exec(conn, _FORGET_HASHES, host_ids)
        return await self.cluster(cluster_id), host_ids

    # -- hosts ---------------------------------------------------------------

    async def delete_host(self, host_id: str, *, with_vms: bool = False) -> None:
        """Forget a host; the database refuses while VMs are registered on it,
        unless ``with_vms``: then they go first (their attachments with them)."""
        async with self._pool.acquire() as conn, conn.transaction():
            if with_vms:
                await self._exec(conn, "DELETE FROM vms WHERE host_id = $1", host_id)
            try:
                deleted = await self._exec(conn, "DELETE FROM hosts WHERE id = $1", host_id)
            except asyncpg.ForeignKeyViolationError:
                raise Conflict(
                    f"host {host_id} still has VMs: remove them (DELETE /api/vms/{{id}}) first,"
                    " or remove the host with force=true to forget them with it"
                ) from None
        if not deleted:
            raise NotFound(f"no host {host_id}")

    # -- history and events --------------------------------------------------

    async def history(self, vm_id: str, disk_id: str, limit: int) -> list[NameChange]:
        """The disk's name changes in the VM, newest first."""
        rows = await self._pool.fetch(
            f"""SELECT {_HISTORY_COLUMNS} FROM logical_name_history
                WHERE vm_id = $1 AND disk_id = $2 ORDER BY id DESC LIMIT $3""",
            vm_id,
            disk_id,
            limit,
        )
        return [_change(r) for r in rows]

    async def vm_history(
        self, vm_id: str, name: str | None, disk_id: str | None, limit: int
    ) -> list[NameChange]:
        """The VM's name changes, newest first: those that gave ``name`` (a former name's
        disk, SPEC §17; a Windows name in any case, §20), of ``disk_id``, or all; whether
        the disk is attached or not."""
        rows = await self._pool.fetch(
            f"""SELECT {_HISTORY_COLUMNS} FROM logical_name_history
                WHERE vm_id = $1 AND ($2::text IS NULL OR new_name = $2
                       OR (left($2, 1) = '\\' AND upper(new_name) = upper($2)))
                  AND ($3::uuid IS NULL OR disk_id = $3) ORDER BY id DESC LIMIT $4""",
            vm_id,
            name,
            disk_id,
            limit,
        )
        return [_change(r) for r in rows]

    async def changes_after(self, last_id: int, limit: int) -> list[NameChange]:
        """Name changes stored after ``last_id``, oldest first: what a stream missed."""
        rows = await self._pool.fetch(
            f"""SELECT {_HISTORY_COLUMNS} FROM logical_name_history
                WHERE id > $1 ORDER BY id LIMIT $2""",
            last_id,
            limit,
        )
        return [_change(r) for r in rows]

    async def events_after(self, last_id: int, limit: int) -> list[NameChange | GuestChange]:
        """What a stream missed after ``last_id``, oldest first: name changes and the
        guest views changed since (each attachment's latest view, once)."""
        changes: list[NameChange | GuestChange] = list(await self.changes_after(last_id, limit))
        rows = await self._pool.fetch(
            """SELECT vm_id::text, disk_id::text, guest::text, guest_event_id FROM vm_device
               WHERE guest_event_id > $1 ORDER BY guest_event_id LIMIT $2""",
            last_id,
            limit,
        )
        for r in rows:
            guest = orjson.loads(r["guest"]) if r["guest"] is not None else None
            changes.append(GuestChange(r["vm_id"], r["disk_id"], guest, r["guest_event_id"]))
        changes.sort(key=lambda c: c.id or 0)
        return changes[:limit]

    async def latest_change_id(self) -> int:
        value: int | None = await self._pool.fetchval(
            """SELECT greatest((SELECT max(id) FROM logical_name_history),
                               (SELECT max(guest_event_id) FROM vm_device))"""
        )
        return value or 0

    # -- disks ---------------------------------------------------------------

    async def disks(self, *, disk_id: str | None, serial: str | None) -> list[DiskRow]:
        """Disks with that id or whose serial the text matches, with their attachments."""
        found: dict[str, DiskRow] = {}
        for r in await self._pool.fetch(_DISKS, disk_id, serial):
            disk = found.get(r["id"]) or DiskRow(r["id"], r["serial"], r["storage_type"], ())
            if r["vm_id"] is not None:
                use = DiskUse(
                    r["vm_id"],
                    r["vm_name"],
                    r["interface"],
                    r["is_plugged"],
                    r["logical_name"],
                    r["logical_name_seen_at"],
                )
                disk = DiskRow(disk.id, disk.serial, disk.storage_type, (*disk.attachments, use))
            found[r["id"]] = disk
        return list(found.values())
