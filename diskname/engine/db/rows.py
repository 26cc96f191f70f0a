"""What every store shares: the translated pool, counted writes, and rows as the engine's values.

A row becomes an :class:`~..core.models.Attachment` (with its disk) in one
place, :func:`attachment`, whichever statement read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from ..core.models import Attachment, Disk, StorageRef
from ..core.search import Search
from ..metrics import Metrics
from .pool import Pool, rows_changed

HOST_COLUMNS = "id::text, name, address, port, status, status_reason, token"
# An attachment's ten columns, then its disk's (as :func:`attachment` reads them).
ATTACHMENT_COLUMNS = """vd.vm_id::text, vd.disk_id::text, vd.device_id::text, vd.interface,
       vd.is_plugged, vd.address, vd.logical_name, vd.logical_name_source,
       vd.logical_name_seen_at, vd.name_conflict"""
# A floating disk's columns (as :func:`disk` reads them after the others).
DISK_STORAGE_COLUMNS = """d.storage_domain_id::text,
       (SELECT sd.name FROM storage_domains sd WHERE sd.id = d.storage_domain_id),
       d.format, d.sparse, d.status_reason"""
DISK_COLUMNS = (
    "d.name, d.provisioned_size, d.status, CASE WHEN d.storage_type = 'lun' THEN d.serial END,"
    " d.serial, " + DISK_STORAGE_COLUMNS
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


def disk(disk_id: str, values: list[Any]) -> Disk:
    """A disk from its :data:`DISK_COLUMNS`."""
    name, size, status, lun, serial, domain_id, domain_name, fmt, sparse, reason = values
    domain = StorageRef(domain_id, domain_name) if domain_id and domain_name else None
    return Disk(disk_id, name, size, status, lun, serial, domain, fmt, sparse, reason)


def attachment(row: Any) -> Attachment:
    """An attachment row: its ten columns, its disk's ten after them, then ``guest``
    and (when read with them) its freshness, by name."""
    values = list(row.values())
    att = Attachment(*values[:10])
    guest = row.get("guest")
    keys = set(row.keys())
    fresh = {k: row[k] for k in ("stale", "origin", "reported_at") if k in keys}
    return dataclasses.replace(
        att,
        disk=disk(att.disk_id, values[10:20]),
        guest=orjson.loads(guest) if guest is not None else None,
        **fresh,
    )


# Per collection, each search field's predicate: {op} is LIKE or ILIKE, {arg} the pattern.
# (A VM's status is the host's spelling, "Powering up"; oVirt's is "powering_up".)
SEARCH_COLUMNS: dict[str, dict[str, str]] = {
    "vms": {
        "name": "name {op} {arg}",
        "status": "lower(replace(status, ' ', '_')) {op} lower({arg})",
        "host": "EXISTS (SELECT 1 FROM hosts h WHERE h.id = host_id AND h.name {op} {arg})",
    },
    "disks": {
        "name": "d.name {op} {arg}",
        "alias": "d.name {op} {arg}",
        "status": "d.status {op} lower({arg})",
        "storage.name": """EXISTS (SELECT 1 FROM storage_domains sd
                            WHERE sd.id = d.storage_domain_id AND sd.name {op} {arg})""",
        "vm_names": """EXISTS (SELECT 1 FROM vm_device vn JOIN vms v ON v.id = vn.vm_id
                        WHERE vn.disk_id = d.id AND v.name {op} {arg})""",
    },
    "hosts": {"name": "name {op} {arg}", "status": "status {op} lower({arg})"},
    "storagedomains": {"name": "sd.name {op} {arg}"},
}


def filtered(
    select: str,
    search: Search | None,
    limit: int | None,
    order: str,
    collection: str = "vms",
) -> tuple[str, list[Any]]:
    """``select`` narrowed to an oVirt search's terms, ordered and limited."""
    where: list[str] = []
    args: list[Any] = []
    columns = SEARCH_COLUMNS[collection]
    for term in search.terms if search is not None else ():
        args.append(term.like)
        operator = "LIKE" if search is not None and search.case_sensitive else "ILIKE"
        where.append(columns[term.field].format(op=operator, arg=f"${len(args)}"))
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
