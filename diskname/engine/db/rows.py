"""What every store shares: the translated pool, counted writes, and rows as the engine's values.

A row becomes an :class:`~..core.models.Attachment` (with its disk) in one
place, :func:`attachment`, whichever statement read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ..core.models import Attachment, Disk
from ..core.search import NameFilter
from ..metrics import Metrics
from .pool import Pool, rows_changed

HOST_COLUMNS = "id::text, name, address, port, status, status_reason, token"
# An attachment's ten columns, then its disk's (as :func:`attachment` reads them).
ATTACHMENT_COLUMNS = """vd.vm_id::text, vd.disk_id::text, vd.device_id::text, vd.interface,
       vd.is_plugged, vd.address, vd.logical_name, vd.logical_name_source,
       vd.logical_name_seen_at, vd.name_conflict"""
DISK_COLUMNS = (
    "d.name, d.provisioned_size, d.status, CASE WHEN d.storage_type = 'lun' THEN d.serial END,"
    " d.serial"
)
# The guest's view (SPEC §17) comes last but one, read by its name; then freshness:
# stale while the VM's guest agent is not up, and the source that gave the current
# name (its newest history row) says whose confirmation time is the name's.
FRESHNESS_COLUMNS = """v.guest_agent_status <> 'up' AS stale, o.origin,
       (v.guest_reported_at ->> coalesce(o.origin, 'agent'))::timestamptz AS reported_at"""
ATTACHMENTS = f"""
SELECT {ATTACHMENT_COLUMNS}, {DISK_COLUMNS}, vd.guest::text AS guest, {FRESHNESS_COLUMNS}
FROM vm_device vd JOIN disks d ON d.id = vd.disk_id JOIN vms v ON v.id = vd.vm_id
LEFT JOIN LATERAL (
    SELECT h.source AS origin FROM logical_name_history h
    WHERE h.disk_id = vd.disk_id AND h.vm_id = vd.vm_id AND vd.logical_name IS NOT NULL
    ORDER BY h.id DESC LIMIT 1) o ON true
"""
DISKS = f"SELECT d.id::text, {DISK_COLUMNS} FROM disks d"
VMS = """SELECT id::text, name, status, host_id::text,
       guest_agent_status, guest_agent_since, guest_agent_sources FROM vms"""


def attachment(row: Any) -> Attachment:
    """An attachment row: its ten columns, its disk's five after them, then ``guest``
    and (when read with them) its freshness, by name."""
    values = list(row.values())
    att = Attachment(*values[:10])
    guest = row.get("guest")
    keys = set(row.keys())
    fresh = {k: row[k] for k in ("stale", "origin", "reported_at") if k in keys}
    return dataclasses.replace(
        att,
        disk=Disk(att.disk_id, *values[10:15]),
        guest=orjson.loads(guest) if guest is not None else None,
        **fresh,
    )


def filtered(
    select: str, names: NameFilter | None, limit: int | None, order: str
) -> tuple[str, list[Any]]:
    """``select`` narrowed to an oVirt search's names, ordered and limited."""
    where: list[str] = []
    args: list[Any] = []
    if names is not None:
        args.append(names.like)
        operator = "LIKE" if names.case_sensitive else "ILIKE"
        where.append(f"name {operator} ${len(args)}")
    sql = select + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
    if limit is not None:
        args.append(limit)
        sql += f" LIMIT ${len(args)}"
    return sql, args


class Tables:
    """A pool and the metrics its writes count in: the base of every store."""

    def __init__(self, pool: Any, metrics: Metrics) -> None:
        self._pool = pool if isinstance(pool, Pool) else Pool(pool)
        self.metrics = metrics

    @property
    def pool(self) -> Pool:
        """The translated pool, for the stores beside this one (users, catalog)."""
        return self._pool

    async def _exec(self, conn: Any, sql: str, *args: Any) -> int:
        """Run a statement; count it in ``db_writes`` when it changed rows."""
        changed = rows_changed(await conn.execute(sql, *args))
        if changed:
            self.metrics.db_writes += 1
        return changed
