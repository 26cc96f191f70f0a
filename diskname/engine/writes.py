"""The monitor's write: a batch of one host's VM reports in one transaction.

A fixed number of statements whatever the batch size (rows go as arrays through
``unnest``), the hashes last: if anything fails, every VM keeps its old hash and
is fetched again. The first statement reads, in one round trip, everything the
plan needs to respect the rules a host cannot break:

- the fence: this engine's lease connection still holds the host's lock, or
  nothing is written (:class:`LeaseLost`);
- VMs registered on another host are not this host's to report: left out,
  and returned as ``foreign`` (SPEC §12);
- a disk plugged into a VM outside the batch stays plugged there only: the
  report's device is stored as unplugged (the partial unique index enforces
  the rule; this keeps one host from making a batch fail forever);
- the cluster's compatibility version decides whether names are kept.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .matching import MatchResult
from .models import NameChange, VmReport
from .names import DeviceRow, UpdatePlan, compat_keeps_names, plan_update

HISTORY_PER_DISK = 100  # rows kept per disk; the oldest go first

Exec = Callable[..., Awaitable[int]]


class LeaseLost(Exception):
    """This engine no longer holds the host's lease: it must store nothing for it."""


@dataclass(frozen=True, slots=True)
class Fence:
    """A write for a host must find the host's lease lock (``lock_class``, the
    host id) held by backend ``pid``: this engine's lease connection."""

    lock_class: int
    pid: int


@dataclass(slots=True)
class Stored:
    changes: list[NameChange] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    blocked_disks: int = 0


class _Batch:
    """The plans of a batch of VMs, merged into the columns the statements take."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.new_disks: dict[str, str] = {}
        self.changes: list[NameChange] = []

    def add(self, vm_id: str, plan: UpdatePlan) -> None:
        self.rows += [(vm_id, *row) for row in plan.rows]
        self.new_disks.update(plan.new_disks)
        self.changes += plan.changes


async def apply_reports(
    conn: Any,
    execute: Exec,
    host_id: str,
    items: Sequence[tuple[VmReport, MatchResult]],
    fence: Fence | None,
) -> Stored:
    """Store ``items`` for ``host_id`` on ``conn`` (in a transaction the caller opened)."""
    reports = list({r.vm_id: (r, m) for r, m in items}.values())
    out = Stored()
    if not reports:
        return out
    vm_ids = [r.vm_id for r, _ in reports]
    disk_ids = sorted({d.disk_id for r, _ in reports for d in r.devices if d.plugged})
    guard = await conn.fetchrow(
        _GUARD_SQL,
        host_id,
        vm_ids,
        disk_ids,
        fence is not None,
        fence.lock_class if fence else 0,
        fence.pid if fence else 0,
    )
    if fence is not None and not guard["fenced"]:
        raise LeaseLost(f"the lease on host {host_id} is no longer held by this engine")
    out.foreign = sorted(guard["foreign"] or [])
    reports = [(r, m) for r, m in reports if r.vm_id not in set(out.foreign)]
    if not reports:
        return out
    vm_ids = [r.vm_id for r, _ in reports]
    blocked = _blocked_disks(reports, guard["plugged"] or [])
    out.blocked_disks = sum(len(b) for b in blocked.values())
    current: dict[str, list[DeviceRow]] = {vm: [] for vm in vm_ids}
    for row in await conn.fetch(_CURRENT_SQL, vm_ids):
        current[row["vm_id"]].append(DeviceRow(*list(row.values())[1:]))
    await execute(
        conn,
        _UPSERT_VMS_SQL,
        host_id,
        vm_ids,
        [r.name or r.vm_id for r, _ in reports],
        [r.status for r, _ in reports],
    )
    keep = compat_keeps_names(guard["compat"])
    batch, now = _Batch(), datetime.now(UTC)
    for report, match in reports:
        plan = plan_update(
            report,
            match,
            current[report.vm_id],
            keep_names=keep,
            now=now,
            blocked=blocked[report.vm_id],
        )
        batch.add(report.vm_id, plan)
    if batch.new_disks:
        await execute(conn, _NEW_DISKS_SQL, *zip(*batch.new_disks.items(), strict=True))
    if batch.rows:
        await execute(conn, _UPSERT_SQL, *zip(*batch.rows, strict=True))
    out.changes = await insert_history(conn, execute, batch.changes)
    await execute(conn, _HASH_SQL, vm_ids, [r.hash for r, _ in reports])
    return out


def _blocked_disks(
    reports: Sequence[tuple[VmReport, MatchResult]], plugged: Sequence[str]
) -> dict[str, set[str]]:
    """Per VM, the disks it reports plugged that another VM holds (one VM per disk).

    A disk held by a VM of this batch that no longer reports it is free; within
    the batch the first VM (by id) to report a disk gets it.
    """
    reported = {r.vm_id: {d.disk_id for d in r.devices if d.plugged} for r, _ in reports}
    holder = dict(pair.split(" ", 1) for pair in plugged)
    for disk, vm in list(holder.items()):
        if vm in reported and disk not in reported[vm]:
            del holder[disk]
    blocked: dict[str, set[str]] = {}
    for vm in sorted(reported):
        blocked[vm] = {d for d in reported[vm] if holder.get(d, vm) != vm}
        holder.update((d, vm) for d in reported[vm] - blocked[vm])
    return blocked


async def insert_history(
    conn: Any, execute: Exec, changes: Sequence[NameChange]
) -> list[NameChange]:
    """Record name changes, then trim those disks' history to :data:`HISTORY_PER_DISK`.

    Returns the changes with their row ids: the event ids of ``/api/events``. The
    INSERT returns rows, so it runs as a fetch: its caller counts it as a write.
    """
    if not changes:
        return []
    rows = [(c.vm_id, c.disk_id, c.old, c.new, c.source, c.matched_by, c.at) for c in changes]
    stored = await conn.fetch(_HISTORY_SQL, *zip(*rows, strict=True))
    # A batch names each (VM, disk) at most once: that pair finds each change its id.
    ids = {(r["vm_id"], r["disk_id"]): r["id"] for r in stored}
    disks = sorted({c.disk_id for c in changes})
    await execute(conn, _TRIM_HISTORY_SQL, disks, HISTORY_PER_DISK)
    return [replace(c, id=ids.get((c.vm_id, c.disk_id))) for c in changes]


# One round trip for every rule the plan must respect (see the module docstring).
_GUARD_SQL = """
SELECT
  (SELECT array_agg(id::text) FROM vms
    WHERE id = ANY($2::uuid[]) AND host_id <> $1::uuid) AS foreign,
  (SELECT array_agg(disk_id::text || ' ' || vm_id::text) FROM vm_device
    WHERE disk_id = ANY($3::uuid[]) AND is_plugged) AS plugged,
  (SELECT c.compatibility_version FROM hosts h JOIN clusters c ON c.id = h.cluster_id
    WHERE h.id = $1::uuid) AS compat,
  (NOT $4::bool OR EXISTS (
    SELECT 1 FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = $6::int AND objsubid = 2
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND classid = $5::int::oid AND objid = hashtext($1::text)::oid)) AS fenced
"""
_UPSERT_VMS_SQL = """
INSERT INTO vms (id, name, host_id, status)
SELECT u.id, u.name, $1::uuid, u.status FROM unnest($2::uuid[], $3::text[], $4::text[])
    AS u(id, name, status)
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status
WHERE vms.status IS DISTINCT FROM EXCLUDED.status AND vms.host_id = $1::uuid
"""
# Rows are locked in one order (vm, disk) so that two writers cannot deadlock.
_CURRENT_SQL = """
SELECT vm_id::text, disk_id::text, device_id::text, interface, is_plugged, address,
       logical_name, logical_name_source, logical_name_seen_at
FROM vm_device WHERE vm_id = ANY($1::uuid[]) ORDER BY vm_id, disk_id FOR UPDATE
"""
_NEW_DISKS_SQL = """
INSERT INTO disks (id, serial) SELECT * FROM unnest($1::uuid[], $2::text[])
ON CONFLICT (id) DO NOTHING
"""
_UPSERT_SQL = """
INSERT INTO vm_device (vm_id, disk_id, device_id, interface, is_plugged, address,
                       logical_name, logical_name_source, logical_name_seen_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bool[], $6::text[],
                     $7::text[], $8::text[], $9::timestamptz[])
ON CONFLICT (vm_id, disk_id) DO UPDATE SET
    device_id = EXCLUDED.device_id, interface = EXCLUDED.interface,
    is_plugged = EXCLUDED.is_plugged, address = EXCLUDED.address,
    logical_name = EXCLUDED.logical_name, logical_name_source = EXCLUDED.logical_name_source,
    logical_name_seen_at = EXCLUDED.logical_name_seen_at
"""
_HASH_SQL = """
UPDATE vms SET hash = u.hash FROM unnest($1::uuid[], $2::text[]) AS u(id, hash)
WHERE vms.id = u.id AND vms.hash IS DISTINCT FROM u.hash
"""
_HISTORY_SQL = """
INSERT INTO logical_name_history
    (vm_id, disk_id, old_name, new_name, source, matched_by, changed_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[])
RETURNING id, vm_id::text, disk_id::text
"""
_TRIM_HISTORY_SQL = """
DELETE FROM logical_name_history WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY disk_id ORDER BY id DESC) AS n
        FROM logical_name_history WHERE disk_id = ANY($1::uuid[])
    ) ranked WHERE n > $2
)
"""
