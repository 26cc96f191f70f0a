"""Plug and unplug intents: what an engine was doing to a host when it died (SPEC §19).

Every hot-plug writes its intent with its claim, before the host is called (in
the claim's own statement, :mod:`.plugs`, or transaction, :mod:`.attaching`);
every unplug writes one before its host call. The outcome removes it in the same
statement or transaction that records what the host did. So an intent that is
still there is either in flight, or left by an engine that was killed between
the two writes: *stale*, when the backend of the engine's lease connection
(``engine_pid``) is gone, as it is the moment a killed engine's connections
close. An intent written while the lease connection was down carries no pid and
is stale after :data:`UNKNOWN_ENGINE_GRACE`; one older than :data:`MAX_AGE`
(far longer than any host call may take) is stale whoever wrote it.

Resolution is the host's word, stored by the owner of the VM's host like any
report (:mod:`.reports`): a VM with an intent is fetched whatever its stored hash
(:data:`VM_STATES_SQL`), the report sets ``is_plugged`` as the host has it, and
in that same transaction the stale intents of the stored VMs are deleted and
their disks' ``locked`` status becomes ``ok`` (:data:`RESOLVE_SQL`). The guard's
read finds them (:data:`GUARD_COLUMN`), so a batch with none costs nothing more.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Exec = Callable[..., Awaitable[int]]  # as :data:`.reports.Exec`

PLUG, UNPLUG = "plug", "unplug"
ENGINE_APPLICATION = "diskname-engine"  # the lease connection's application_name
UNKNOWN_ENGINE_GRACE = "60 seconds"
MAX_AGE = "10 minutes"

# Whether intent ``i`` is stale: its engine is gone (or it is far too old).
STALE = f"""(CASE WHEN i.engine_pid IS NULL
      THEN i.created_at < now() - interval '{UNKNOWN_ENGINE_GRACE}'
      ELSE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                       WHERE a.pid = i.engine_pid AND a.application_name = '{ENGINE_APPLICATION}')
   END OR i.created_at < now() - interval '{MAX_AGE}')"""

# A column of the reports' guard ($1: the VMs of the batch): their stale intents.
GUARD_COLUMN = f"""(SELECT array_agg(i.vm_id::text || ' ' || i.disk_id::text)
    FROM plug_intents i WHERE i.vm_id = ANY($1::uuid[]) AND {STALE}) AS stale_intents"""

# Every VM of the hosts, its stored hash left out (NULL: fetch it) when it has an intent.
VM_STATES_SQL = """
SELECT v.host_id::text, v.id::text,
       CASE WHEN EXISTS (SELECT 1 FROM plug_intents i WHERE i.vm_id = v.id)
            THEN NULL ELSE v.hash END AS hash,
       v.status, v.guest_agent_status || ':' || array_to_string(v.guest_agent_sources, ',')
FROM vms v WHERE v.host_id = ANY($1::uuid[])
"""

# The host's report of these VMs is stored (same transaction): the intents are over.
RESOLVE_SQL = """
WITH unlocked AS (
    UPDATE disks SET status = 'ok' WHERE id = ANY($2::uuid[]) AND status <> 'ok'
)
DELETE FROM plug_intents i USING unnest($1::uuid[], $2::uuid[]) AS u(vm_id, disk_id)
WHERE i.vm_id = u.vm_id AND i.disk_id = u.disk_id
"""

# A column of the balancing round's sweep, for an engine that died while this one
# already owned the host: "host VM" of each VM with a stale intent (NULL: none).
STALE_VMS_COLUMN = f"""(SELECT array_agg(DISTINCT v.host_id::text || ' ' || i.vm_id::text)
    FROM plug_intents i JOIN vms v ON v.id = i.vm_id WHERE {STALE}) AS stale_vms"""

RECORD_SQL = """
INSERT INTO plug_intents (vm_id, disk_id, kind, engine_pid) VALUES ($1, $2, $3, $4)
ON CONFLICT (vm_id, disk_id) DO UPDATE SET
    kind = EXCLUDED.kind, engine_pid = EXCLUDED.engine_pid, created_at = now()
"""
DROP_SQL = "DELETE FROM plug_intents WHERE vm_id = $1 AND disk_id = $2"


def pairs(texts: list[str] | None) -> list[tuple[str, str]]:
    """The pairs of a column above: (VM, disk) of the guard's, (host, VM) of the sweep's."""
    return [(a, b) for a, b in (t.split(" ") for t in texts or [])]


def stale_pairs(guard: Any) -> list[tuple[str, str]]:
    """(VM, disk) of each stale intent the guard found."""
    return pairs(guard["stale_intents"])


async def resolve(conn: Any, execute: Exec, pairs: list[tuple[str, str]]) -> None:
    """Remove the intents of VMs whose report was just stored; unlock their disks."""
    if pairs:
        vms, disks = zip(*pairs, strict=True)
        await execute(conn, RESOLVE_SQL, list(vms), list(disks))
