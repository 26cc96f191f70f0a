"""What every store shares: the translated pool, counted writes, and rows as the engine's values.

A row becomes an :class:`~..core.models.Attachment` (with its disk) in one
place, :func:`attachment`, whichever statement read it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..core.models import Attachment, Disk, StorageRef
from ..core.search import Search
from ..metrics import Metrics
from .pool import Pool, rows_changed

HOST_COLUMNS = "id::text, name, address, port, status, status_reason, token"
# An attachment's nine columns, then its disk's (as :func:`attachment` reads them).
ATTACHMENT_COLUMNS = """vd.vm_id::text, vd.disk_id::text, vd.device_id::text, vd.interface,
       vd.is_plugged, vd.address, vd.logical_name, vd.logical_name_source,
       vd.logical_name_seen_at"""
# A disk's columns after its id: as :func:`disk` reads them.
DISK_STORAGE_COLUMNS = """d.storage_domain_id::text,
       (SELECT sd.name FROM storage_domains sd WHERE sd.id = d.storage_domain_id),
       d.format, d.sparse, d.status_reason"""
DISK_COLUMNS = (
    "d.name, d.provisioned_size, d.status, CASE WHEN d.storage_type = 'lun' THEN d.serial END, "
    + DISK_STORAGE_COLUMNS
)
ATTACHMENTS = f"""
SELECT {ATTACHMENT_COLUMNS}, {DISK_COLUMNS}
FROM vm_device vd JOIN disks d ON d.id = vd.disk_id
"""
DISKS = f"SELECT d.id::text, {DISK_COLUMNS} FROM disks d"
VMS = "SELECT id::text, name, status, host_id::text FROM vms"


def disk(disk_id: str, values: list[Any]) -> Disk:
    """A disk from its :data:`DISK_COLUMNS`."""
    name, size, status, lun, domain_id, domain_name, fmt, sparse, reason = values
    domain = StorageRef(domain_id, domain_name) if domain_id and domain_name else None
    return Disk(disk_id, name, size, status, lun, domain, fmt, sparse, reason)


def attachment(row: Any) -> Attachment:
    """An attachment row with its disk's columns after its own nine."""
    values = list(row.values())
    att = Attachment(*values[:9])
    return dataclasses.replace(att, disk=disk(att.disk_id, values[9:]))


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
