"""The monitors' write: batches of VM reports, of one host or several, in one transaction.

A fixed number of statements whatever the batch size (rows go as arrays through
``unnest``), the hashes last: if anything fails, every VM keeps its old hash and
is fetched again. Several hosts' batches share the transaction when they come
together (a burst of plugs across the fleet, the first discovery of a fleet):
each row carries its host, and each host keeps its own outcome. The first
statement reads, in one round trip, everything the plan needs to respect the
rules a host cannot break:

- the fence: this engine's lease connection still holds the host's lock, or
  nothing is written for that host (:class:`LeaseLost`, for that host alone);
- VMs registered on another host are not this host's to report: left out,
  and returned as ``foreign`` (SPEC §12);
- a host reports only about its own (:mod:`..core.claims`, SPEC §19): a disk the
  engine has attached to another VM, or knows and has attached nowhere, or a new
  disk carrying a known disk's serial, is not written at all (refused, counted);
  a disk attached here but plugged into another VM stays plugged there only: the
  report's device is stored as unplugged (the partial unique index enforces the
  rule; this keeps one host from making a batch fail forever);
- an adopted VM's name is checked as user input is; a bad one is not stored
  (the VM is named by its id) and is counted;
- each host's cluster's compatibility version decides whether its names are kept;
- a stored VM's plug and unplug intents left by a dead engine are over: the
  report says what the host did (:mod:`.intents`, SPEC §19 "Crashes").

Every name change stored (here, or by an unplug or a detach) is also sent on the
:data:`NAMES_CHANNEL` NOTIFY channel, by the history's own INSERT: PostgreSQL
delivers it to every engine's lease connection when, and only if, it commits,
so a request waiting on another engine hears of it (SPEC §18).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from ..core.claims import BAD_VM_NAME, Held, Verdict, judge
from ..core.matching import MatchResult
from ..core.models import GuestChange, NameChange, VmReport, valid_object_name
from ..core.planning import DeviceRow, UpdatePlan, compat_keeps_names, guest_text, plan_update
from . import intents
from .agents import HASH_SQL, hash_columns

HISTORY_PER_DISK = 100  # rows kept per disk; the oldest go first
NAMES_CHANNEL = "diskname_name_change"  # payload: a NameChange's JSON

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
    # Guests' views that changed (SPEC §17), each with its event id.
    guests: list[GuestChange] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    blocked_disks: int = 0
    # Claims the host may not make, by reason (:mod:`..core.claims`).
    refused: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class HostReports:
    """One host's reports to store, with the fence its writes must find."""

    host_id: str
    items: Sequence[tuple[VmReport, MatchResult]]
    fence: Fence | None = None

    def unique(self) -> list[tuple[VmReport, MatchResult]]:
        return list({r.vm_id: (r, m) for r, m in self.items}.values())


class _Batch:
    """The plans of a batch of VMs, merged into the columns the statements take."""

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.new_disks: dict[str, str] = {}
        self.changes: list[NameChange] = []
        self.guests: list[GuestChange] = []

    def add(self, vm_id: str, plan: UpdatePlan) -> None:
        self.rows += [(vm_id, *row) for row in plan.rows]
        self.new_disks.update(plan.new_disks)
        self.changes += plan.changes
        self.guests += plan.guests


async def apply_reports(
    conn: Any,
    execute: Exec,
    host_id: str,
    items: Sequence[tuple[VmReport, MatchResult]],
    fence: Fence | None,
) -> Stored:
    """Store ``items`` for ``host_id`` on ``conn`` (in a transaction the caller opened)."""
    (outcome,) = await apply_many(conn, execute, [HostReports(host_id, items, fence)])
    if isinstance(outcome, LeaseLost):
        raise outcome
    return outcome


async def apply_many(
    conn: Any, execute: Exec, hosts: Sequence[HostReports]
) -> list[Stored | LeaseLost]:
    """Store several hosts' reports on ``conn`` (in a transaction the caller opened).

    No VM may be in two hosts' reports (the caller stores such batches apart).
    Each host gets its outcome: what was stored, or :class:`LeaseLost`.
    """
    batches = {h.host_id: h.unique() for h in hosts}
    outcomes: dict[str, Stored | LeaseLost] = {h: Stored() for h in batches}
    owner = {r.vm_id: h for h, items in batches.items() for r, _ in items}
    if not owner:
        return [outcomes[h.host_id] for h in hosts]
    guard = await conn.fetchrow(_GUARD_SQL, *_guard_args(hosts, batches, owner))
    for host_id in guard["unfenced"] or []:
        outcomes[host_id] = LeaseLost(
            f"the lease on host {host_id} is no longer held by this engine"
        )
    foreign = set(guard["foreign"] or [])
    reports = [
        (h, r, m)
        for h, items in batches.items()
        if isinstance(outcomes[h], Stored)
        for r, m in items
        if r.vm_id not in foreign
    ]
    for vm_id in sorted(foreign):
        stored = outcomes[owner[vm_id]]
        if isinstance(stored, Stored):
            stored.foreign.append(vm_id)
    if reports:
        await _store(conn, execute, reports, guard, outcomes)
    return [outcomes[h.host_id] for h in hosts]


def _guard_args(
    hosts: Sequence[HostReports],
    batches: dict[str, list[tuple[VmReport, MatchResult]]],
    owner: dict[str, str],
) -> tuple[Any, ...]:
    fenced = [h for h in hosts if h.fence is not None]
    devices = [d for items in batches.values() for r, _ in items for d in r.devices if d.plugged]
    disk_ids = sorted({d.disk_id for d in devices})
    return (
        list(owner),
        list(owner.values()),
        disk_ids,
        list(batches),
        [h.host_id for h in fenced],
        [h.fence.lock_class for h in fenced if h.fence is not None],
        [h.fence.pid for h in fenced if h.fence is not None],
        sorted({d.serial for d in devices}),
    )


async def _store(
    conn: Any,
    execute: Exec,
    reports: list[tuple[str, VmReport, MatchResult]],
    guard: Any,
    outcomes: dict[str, Stored | LeaseLost],
) -> None:
    pairs = [(r, m) for _, r, m in reports]
    vm_ids = [r.vm_id for r, _ in pairs]
    verdict = _judge(pairs, guard)
    current: dict[str, list[DeviceRow]] = {vm: [] for vm in vm_ids}
    for row in await conn.fetch(_CURRENT_SQL, vm_ids):
        current[row["vm_id"]].append(_device_row(row))
    await execute(
        conn,
        _UPSERT_VMS_SQL,
        vm_ids,
        [_adopted_name(r, outcomes[h]) for h, r, _ in reports],
        [h for h, _, _ in reports],
        [r.status for r, _ in pairs],
    )
    compat = dict(pair.split(" ", 1) for pair in guard["compat"] or [])
    batch, now = _Batch(), datetime.now(UTC)
    for host_id, report, match in reports:
        plan = plan_update(
            report,
            match,
            current[report.vm_id],
            keep_names=compat_keeps_names(compat.get(host_id)),
            now=now,
            blocked=verdict.blocked[report.vm_id],
            refused=verdict.refused[report.vm_id],
        )
        batch.add(report.vm_id, plan)
        stored = outcomes[host_id]
        if isinstance(stored, Stored):
            stored.changes += plan.changes
            stored.guests += plan.guests
            stored.blocked_disks += len(verdict.blocked[report.vm_id])
            stored.refused.update(verdict.reasons.get(report.vm_id, Counter()))
    if batch.new_disks:
        await execute(conn, _NEW_DISKS_SQL, *zip(*batch.new_disks.items(), strict=True))
    if batch.rows:
        await execute(conn, _UPSERT_SQL, *zip(*batch.rows, strict=True))
    stored_vms = set(vm_ids)
    stale = [(vm, disk) for vm, disk in intents.stale_pairs(guard) if vm in stored_vms]
    await intents.resolve(conn, execute, stale)  # (none: no statement)
    stamped = {(c.vm_id, c.disk_id): c for c in await insert_history(conn, execute, batch.changes)}
    for stored in outcomes.values():  # each change with its history row id (the event id)
        if isinstance(stored, Stored):
            stored.changes = [stamped.get((c.vm_id, c.disk_id), c) for c in stored.changes]
    if batch.guests:
        ids = await _stamp_guests(conn, batch.guests)
        for stored in outcomes.values():
            if isinstance(stored, Stored):
                stored.guests = [
                    replace(g, id=ids.get((g.vm_id, g.disk_id))) for g in stored.guests
                ]
    await execute(conn, HASH_SQL, *hash_columns([r for r, _ in pairs]))


def _device_row(row: Any) -> DeviceRow:
    """A ``vm_device`` row read by :data:`_CURRENT_SQL`, its view as canonical text."""
    columns = list(row.values())[1:-1]
    guest = row["guest"]
    return DeviceRow(*columns)._replace(
        guest=guest_text(orjson.loads(guest)) if guest is not None else None
    )


def _stamped(change: GuestChange, ids: dict[tuple[str, str], int]) -> GuestChange:
    return replace(change, id=ids.get((change.vm_id, change.disk_id)))


async def _stamp_guests(conn: Any, guests: Sequence[GuestChange]) -> dict[tuple[str, str], int]:
    """Give each changed view its event id (the history's sequence), kept on its row.

    Runs only when some guest's view changed: a quiet fleet never gets here.
    """
    rows = await conn.fetch(
        _STAMP_GUESTS_SQL, [g.vm_id for g in guests], [g.disk_id for g in guests]
    )
    return {(r["vm_id"], r["disk_id"]): r["guest_event_id"] for r in rows}


def _judge(reports: Sequence[tuple[VmReport, MatchResult]], guard: Any) -> Verdict:
    """Which reported disks each VM may claim, from what the guard read."""
    attachments: dict[tuple[str, str], bool] = {}
    for text in guard["attached"] or []:
        disk, vm, plugged = text.split(" ")
        attachments[(disk, vm)] = plugged == "t"
    held = Held(attachments, frozenset(guard["known"] or []), frozenset(guard["taken"] or []))
    reported = {
        r.vm_id: [(d.disk_id, d.serial) for d in r.devices if d.plugged] for r, _ in reports
    }
    return judge(reported, held)


def _adopted_name(report: VmReport, stored: Stored | LeaseLost) -> str:
    """The name a new VM is stored with: the host's, if it is a valid name; else its id."""
    if report.name is None or valid_object_name(report.name):
        return report.name or report.vm_id
    if isinstance(stored, Stored):
        stored.refused[BAD_VM_NAME] += 1
    return report.vm_id


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
    stored = await conn.fetch(_HISTORY_SQL, *zip(*rows, strict=True), NAMES_CHANNEL)
    # A batch names each (VM, disk) at most once: that pair finds each change its id.
    ids = {(r["vm_id"], r["disk_id"]): r["id"] for r in stored}
    disks = sorted({c.disk_id for c in changes})
    await execute(conn, _TRIM_HISTORY_SQL, disks, HISTORY_PER_DISK)
    return [replace(c, id=ids.get((c.vm_id, c.disk_id))) for c in changes]


# One round trip for every rule the plan must respect (see the module docstring):
# $1/$2 each VM and the host reporting it, $3 the disks reported plugged, $4 the
# hosts, $5/$6/$7 the fences (host, lock class, lease backend), $8 the serials of
# the disks reported plugged. The VMs' stale intents come last (:mod:`.intents`).
_GUARD_SQL = (
    """
SELECT
  (SELECT array_agg(v.id::text) FROM vms v
    JOIN unnest($1::uuid[], $2::uuid[]) AS u(id, host_id) ON v.id = u.id
    WHERE v.host_id <> u.host_id) AS foreign,
  (SELECT array_agg(disk_id::text || ' ' || vm_id::text || ' ' || is_plugged::text)
    FROM vm_device WHERE disk_id = ANY($3::uuid[])) AS attached,
  (SELECT array_agg(id::text) FROM disks WHERE id = ANY($3::uuid[])) AS known,
  (SELECT array_agg(DISTINCT serial) FROM disks WHERE serial = ANY($8::text[])) AS taken,
  (SELECT array_agg(h.id::text || ' ' || c.compatibility_version)
    FROM hosts h JOIN clusters c ON c.id = h.cluster_id WHERE h.id = ANY($4::uuid[])) AS compat,
  (SELECT array_agg(f.host_id) FROM unnest($5::text[], $6::int[], $7::int[])
      AS f(host_id, lock_class, pid)
    WHERE NOT EXISTS (
      SELECT 1 FROM pg_locks
      WHERE locktype = 'advisory' AND granted AND pid = f.pid AND objsubid = 2
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND classid = f.lock_class::oid AND objid = hashtext(f.host_id)::oid)) AS unfenced,
  """
    + intents.GUARD_COLUMN
)

_UPSERT_VMS_SQL = """
INSERT INTO vms (id, name, host_id, status)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[])
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status
WHERE vms.status IS DISTINCT FROM EXCLUDED.status AND vms.host_id = EXCLUDED.host_id
"""
# Rows are locked in one order (vm, disk) so that two writers cannot deadlock.
_CURRENT_SQL = """
SELECT vm_id::text, disk_id::text, device_id::text, interface, is_plugged, address,
       logical_name, logical_name_source, logical_name_seen_at, name_conflict, guest::text
FROM vm_device WHERE vm_id = ANY($1::uuid[]) ORDER BY vm_id, disk_id FOR UPDATE
"""
_NEW_DISKS_SQL = """
INSERT INTO disks (id, serial) SELECT * FROM unnest($1::uuid[], $2::text[])
ON CONFLICT (id) DO NOTHING
"""
_UPSERT_SQL = """
INSERT INTO vm_device (vm_id, disk_id, device_id, interface, is_plugged, address,
                       logical_name, logical_name_source, logical_name_seen_at, name_conflict,
                       guest)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bool[], $6::text[],
                     $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::jsonb[])
ON CONFLICT (vm_id, disk_id) DO UPDATE SET
    device_id = EXCLUDED.device_id, interface = EXCLUDED.interface,
    is_plugged = EXCLUDED.is_plugged, address = EXCLUDED.address,
    logical_name = EXCLUDED.logical_name, logical_name_source = EXCLUDED.logical_name_source,
    logical_name_seen_at = EXCLUDED.logical_name_seen_at, name_conflict = EXCLUDED.name_conflict,
    guest = EXCLUDED.guest
"""
_STAMP_GUESTS_SQL = """
UPDATE vm_device v
SET guest_event_id = nextval(pg_get_serial_sequence('logical_name_history', 'id'))
FROM unnest($1::uuid[], $2::uuid[]) AS u(vm_id, disk_id)
WHERE v.vm_id = u.vm_id AND v.disk_id = u.disk_id
RETURNING v.vm_id::text, v.disk_id::text, v.guest_event_id
"""
_HISTORY_SQL = """
INSERT INTO logical_name_history
    (vm_id, disk_id, old_name, new_name, source, matched_by, changed_at)
SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::timestamptz[])
RETURNING id, vm_id::text, disk_id::text,
  pg_notify($8, json_build_object(
    'id', id, 'vm_id', vm_id, 'disk_id', disk_id, 'old', old_name, 'new', new_name,
    'source', source, 'matched_by', matched_by, 'at', changed_at)::text) AS notified
"""  # the notification is the change's event, NameChange.to_json's keys: no extra round trip
_TRIM_HISTORY_SQL = """
DELETE FROM logical_name_history WHERE id IN (
    SELECT id FROM (
        SELECT id, row_number() OVER (PARTITION BY disk_id ORDER BY id DESC) AS n
        FROM logical_name_history WHERE disk_id = ANY($1::uuid[])
    ) ranked WHERE n > $2
)
"""
