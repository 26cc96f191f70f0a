"""The writes of a hot-plug, set-based, so that a batch of requests shares a transaction.

A REST hot-plug (``POST .../diskattachments`` with ``active``) makes two writes
around its host call: the *claim* (the disk, if new, and its attachment, marked
plugged *before* the host is asked, so that the partial unique index decides
between two requests for one disk, whichever engine serves them) and the
*outcome* (the device the host made and the VM's hash forgotten; or, when the
host call failed, the attachment and the new disk removed again).

Each takes a list and is one statement (one round trip, its own transaction)
whatever its length. Nothing in them raises for one request's sake: a disk plugged into another VM,
an attachment that exists, a disk that does not are each that request's own
error, returned in its place. The callers batch requests with
:class:`~.batching.Coalescer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.models import Attachment
from ..errors import Conflict, MissingReference, NotFound
from .reports import Exec
from .rows import DISK_STORAGE_COLUMNS, attachment


@dataclass(frozen=True, slots=True)
class Claim:
    """A disk to attach to a VM as plugged; ``serial`` None: an existing disk's."""

    vm_id: str
    disk_id: str
    device_id: str
    interface: str
    serial: str | None  # given for a new disk, created with this name and size
    name: str | None = None
    provisioned_size: int = 0
    # The backend pid of this engine's lease connection, kept with the intent
    # (:mod:`.intents`): while it lives, the plug may still be in flight.
    engine_pid: int | None = None

    @property
    def new_disk(self) -> bool:
        return self.serial is not None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the host call of a claim ended: the device it made, or ``failed``."""

    claim: Claim
    device_id: str = ""
    address: str | None = None
    failed: bool = False


ClaimResult = str | Exception  # the disk's serial, or why the claim was refused
OutcomeResult = Attachment | None | Exception  # None: rolled back as asked


async def claim(conn: Any, execute: Exec, claims: Sequence[Claim]) -> list[ClaimResult]:
    """Attach each disk as plugged, in one statement; per claim its serial or its error.

    The statement's rows come back through ``fetch``: the caller counts the write.
    """
    columns = zip(
        *(
            (
                c.vm_id,
                c.disk_id,
                c.device_id,
                c.interface,
                c.serial,
                c.name,
                c.provisioned_size,
                c.engine_pid,
            )
            for c in claims
        ),
        strict=True,
    )
    rows = await conn.fetch(_CLAIM_SQL, *columns)
    results: list[ClaimResult] = []
    for c, row in zip(claims, rows, strict=True):
        if row["serial"] is None:
            results.append(MissingReference(f"disk.id {c.disk_id}: no such disk"))
        elif row["claimed"]:
            results.append(row["serial"])
        elif row["attached"]:
            results.append(Conflict(f"disk {c.disk_id} is already attached to VM {c.vm_id}"))
        else:
            results.append(Conflict(f"disk {c.disk_id} is plugged into another VM"))
    refused_new = [
        c.disk_id for c, r in zip(claims, rows, strict=True) if c.new_disk and not r["claimed"]
    ]
    if refused_new:  # (new disks have fresh ids: no conflict should refuse them)
        await execute(conn, _DROP_DISKS_SQL, refused_new)
    return results


async def settle(conn: Any, outcomes: Sequence[Outcome]) -> list[OutcomeResult]:
    """Record what the host did for each claim, in one statement; per outcome the row."""
    columns = zip(
        *(
            (
                o.claim.vm_id,
                o.claim.disk_id,
                o.device_id or o.claim.device_id,
                o.address,
                o.failed,
                o.claim.new_disk,
            )
            for o in outcomes
        ),
        strict=True,
    )
    rows: dict[tuple[str, str], Attachment] = {}
    for row in await conn.fetch(_SETTLE_SQL, *columns):
        att = attachment(row)
        rows[(att.vm_id, att.disk_id)] = att
    return [_settled(o, rows) for o in outcomes]


def _settled(outcome: Outcome, rows: dict[tuple[str, str], Attachment]) -> OutcomeResult:
    if outcome.failed:
        return None
    key = (outcome.claim.vm_id, outcome.claim.disk_id)
    return rows.get(key) or NotFound(f"disk {key[1]} is no longer attached to VM {key[0]}")


_DROP_DISKS_SQL = "DELETE FROM disks WHERE id = ANY($1::uuid[])"
# One statement (one round trip, its own transaction) for a whole batch. The CTEs
# all see the tables as they were before it: "attached" is about rows that existed
# already. With no conflict target, the primary key (already attached) and the
# partial unique index on plugged disks (plugged elsewhere) both just leave the
# row out, and so does a second claim of one disk in the same batch. Each claim
# made is also an intent (:mod:`.intents`), in the same statement: no extra trip.
_CLAIM_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
                         $6::text[], $7::bigint[], $8::int[])
        WITH ORDINALITY AS u(vm_id, disk_id, device_id, interface, new_serial, name, size,
                             engine_pid, n)
), known AS (
    SELECT i.n, COALESCE(i.new_serial, d.serial) AS serial
    FROM input i LEFT JOIN disks d ON d.id = i.disk_id AND i.new_serial IS NULL
), new_disks AS (
    INSERT INTO disks (id, serial, name, provisioned_size, status)
    SELECT disk_id, new_serial, name, size, 'locked' FROM input WHERE new_serial IS NOT NULL
    ON CONFLICT (id) DO NOTHING
), claimed AS (
    INSERT INTO vm_device (vm_id, disk_id, device_id, interface, is_plugged)
    SELECT i.vm_id, i.disk_id, i.device_id, i.interface, true
    FROM input i JOIN known k USING (n) WHERE k.serial IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING vm_id, disk_id
), intended AS (
    INSERT INTO plug_intents (vm_id, disk_id, kind, engine_pid)
    SELECT c.vm_id, c.disk_id, 'plug', i.engine_pid
    FROM claimed c JOIN input i ON i.vm_id = c.vm_id AND i.disk_id = c.disk_id
    ON CONFLICT (vm_id, disk_id) DO UPDATE SET
        kind = 'plug', engine_pid = EXCLUDED.engine_pid, created_at = now()
)
SELECT k.serial, c.vm_id IS NOT NULL AS claimed,
       EXISTS (SELECT 1 FROM vm_device v WHERE v.vm_id = i.vm_id AND v.disk_id = i.disk_id)
           AS attached
FROM input i JOIN known k USING (n)
LEFT JOIN claimed c ON c.vm_id = i.vm_id AND c.disk_id = i.disk_id
ORDER BY i.n
"""
# A failed claim of a new disk goes with its disk (the attachment cascades); of an
# existing disk, with its attachment row. Every VM's hash is forgotten: fetch it.
# The claims' intents are over either way.
_SETTLE_SQL = f"""
WITH input AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bool[], $6::bool[])
        AS u(vm_id, disk_id, device_id, address, failed, new_disk)
), plugged AS (
    UPDATE vm_device v SET device_id = u.device_id, address = COALESCE(u.address, v.address)
    FROM input u
    WHERE v.vm_id = u.vm_id AND v.disk_id = u.disk_id AND v.is_plugged AND NOT u.failed
    RETURNING v.vm_id::text, v.disk_id::text, v.device_id::text, v.interface, v.is_plugged,
        v.address, v.logical_name, v.logical_name_source, v.logical_name_seen_at, v.name_conflict
), unclaimed AS (
    DELETE FROM vm_device v USING input u
    WHERE v.vm_id = u.vm_id AND v.disk_id = u.disk_id AND u.failed AND NOT u.new_disk
), dropped AS (
    DELETE FROM disks d USING input u WHERE d.id = u.disk_id AND u.failed AND u.new_disk
), ready AS (
    UPDATE disks d SET status = 'ok' FROM input u
    WHERE d.id = u.disk_id AND NOT u.failed AND d.status <> 'ok'
), forgotten AS (
    UPDATE vms SET hash = NULL WHERE id IN (SELECT vm_id FROM input) AND hash IS NOT NULL
), intent_done AS (
    DELETE FROM plug_intents i USING input u WHERE i.vm_id = u.vm_id AND i.disk_id = u.disk_id
)
-- The disk as it is once this statement is done: its status is "ok" now.
SELECT p.*, d.name, d.provisioned_size, 'ok',
       CASE WHEN d.storage_type = 'lun' THEN d.serial END, d.serial, {DISK_STORAGE_COLUMNS}
FROM plugged p JOIN disks d ON d.id = p.disk_id::uuid
"""
