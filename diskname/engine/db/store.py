"""The engine's PostgreSQL access: the pool, the API's reads, the actions' and the monitors' writes.

:class:`Store` is the one object the rest of the engine holds. Its reads are
:mod:`.queries`, the actions' writes :mod:`.attaching` (and :mod:`.plugs`), the
monitors' reports :mod:`.reports`; every statement runs through the translated
pool of :mod:`.pool`, so whatever asyncpg raises leaves as the engine's own error.

Every statement that changes rows is counted in ``Metrics.db_writes``, so a
steady fleet can be shown to cost zero writes. Applying a VM update is one
transaction whose last statement stores the hash: if anything before it
fails, the old hash stays and the next poll fetches again.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from ..core.matching import MatchResult
from ..core.models import HostRow, VmReport
from ..core.sync import StoredVm
from ..core.sync.freshness import AgentChange, AgentKey, agent_key
from ..errors import Conflict, DatabaseRefused, Unavailable
from ..metrics import Metrics
from . import agents, intents
from . import reports as writes
from .attaching import Attaching
from .batching import Coalescer
from .images import LEFT_EXISTS_SQL
from .migrate import apply_migrations
from .pool import Pool
from .queries import Queries
from .reports import Fence, Stored
from .rows import HOST_COLUMNS

# Hosts' report batches (up to 500 VMs each) stored in one transaction at most.
REPORT_BATCHES = 8


# The balancing round's one statement: every host, and the sweep for what a gone
# engine left: the VMs with a stale plug intent (:mod:`.intents`) and whether any
# image creation is left (the image sweep runs only then, :mod:`.images`). With no
# host it is one row of NULL host columns, so the sweep still answers.
ROUND_SQL = f"""
WITH sweep AS (SELECT {intents.STALE_VMS_COLUMN}, EXISTS ({LEFT_EXISTS_SQL}) AS images_left)
SELECT sweep.stale_vms, sweep.images_left, h.*
FROM sweep LEFT JOIN (SELECT {HOST_COLUMNS} FROM hosts ORDER BY name) h ON true
"""


@dataclass(frozen=True, slots=True)
class Round:
    """What a balancing round reads: the hosts, and what gone engines left behind."""

    hosts: list[HostRow]
    stale: list[tuple[str, str]]  # (host, VM) of each VM with a stale plug intent
    images_left: bool


class Store(Queries, Attaching):
    """A pool of connections and the engine's queries."""

    def __init__(self, pool: Any, metrics: Metrics) -> None:
        super().__init__(pool, metrics)
        # Hosts' batches that arrive together share a transaction (:mod:`.reports`).
        self._reports: Coalescer[writes.HostReports, Stored] = Coalescer(
            self._apply_many, max_batch=REPORT_BATCHES
        )
        self._states: Coalescer[str, dict[str, StoredVm]] = Coalescer(
            self._vm_states_many, max_batch=100
        )

    @classmethod
    async def open(cls, dsn: str, metrics: Metrics, *, max_size: int = 10) -> Store:
        return cls(await Pool.open(dsn, max_size=max_size), metrics)

    async def close(self) -> None:
        """Wait for connections to be released, then terminate the stragglers."""
        await self._pool.close()

    async def migrate(self) -> list[str]:
        async with self._pool.acquire() as conn:
            return await apply_migrations(conn)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                return bool(await self._pool.fetchval("SELECT 1"))
        except (TimeoutError, Unavailable, DatabaseRefused):
            return False

    # -- hosts ---------------------------------------------------------------

    async def add_host(
        self, host_id: str, name: str, address: str, port: int, token: str | None = None
    ) -> HostRow:
        sql = "INSERT INTO hosts (id, name, address, port, token) VALUES ($1, $2, $3, $4, $5)"
        async with self._pool.acquire() as conn:
            try:
                await self._exec(conn, sql, host_id, name, address, port, token)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"a host named {name!r} or with id {host_id} exists") from None
        return HostRow(host_id, name, address, port, "unknown", None, token)

    # -- the monitors' writes -----------------------------------------------

    async def set_host_status(self, host_id: str, status: str, reason: str | None = None) -> None:
        """Record the host's status; a host not up leaves its VMs' status ``unknown``
        (SPEC §19) in the same statement. Only a change writes anything."""
        async with self._pool.acquire() as conn:
            changed = await conn.fetchval(_HOST_STATUS_SQL, host_id, status, reason)
        if changed:
            self.metrics.db_writes += 1

    async def vm_states(self, host_id: str) -> dict[str, StoredVm]:
        """(stored hash, status, guest agent) of every VM on the host.

        Monitors that load at the same time (an engine starting under a fleet of
        500 hosts) share one query.
        """
        return await self._states.submit(host_id)

    async def _vm_states_many(self, host_ids: Sequence[str]) -> list[dict[str, StoredVm]]:
        # A VM with a plug or unplug intent is fetched whatever its hash (:mod:`.intents`).
        rows = await self._pool.fetch(intents.VM_STATES_SQL, sorted(set(host_ids)))
        states: dict[str, dict[str, StoredVm]] = {h: {} for h in host_ids}
        keys: dict[str | None, AgentKey | None] = {None: None}  # "status:a,b" -> shared
        for host_id, vm_id, vm_hash, status, agent in rows:
            key = keys.get(agent)
            if key is None and agent is not None:
                state, _, sources = agent.partition(":")
                key = keys[agent] = agent_key(state, filter(None, sources.split(",")))
            states[host_id][sys.intern(vm_id)] = StoredVm(vm_hash, status, key)  # as the wire's
        return [states[h] for h in host_ids]

    async def balancing_round(self) -> Round:
        """Every host, the VMs with an intent its engine left behind, and whether a
        floating disk's image creation is left too: one statement per round."""
        rows = await self._pool.fetch(ROUND_SQL)
        return Round(
            [HostRow(*tuple(r.values())[2:]) for r in rows if r["id"] is not None],
            intents.pairs(rows[0]["stale_vms"]),
            rows[0]["images_left"],
        )

    async def set_vm_status(self, vm_id: str, status: str) -> None:
        sql = "UPDATE vms SET status = $2 WHERE id = $1 AND status IS DISTINCT FROM $2"
        async with self._pool.acquire() as conn:
            await self._exec(conn, sql, vm_id, status)

    async def set_guest_agents(
        self, host_id: str, changes: Sequence[AgentChange]
    ) -> list[AgentChange]:
        """Store guest agents whose status moved (SPEC §17), in one statement; the
        changes that moved a row (not one the database held already)."""
        if not changes:
            return []
        rows = await self._pool.fetch(agents.AGENTS_SQL, *agents.agent_columns(changes), host_id)
        if rows:
            self.metrics.db_writes += 1
        moved = {r["id"] for r in rows}
        return [c for c in changes if c.vm_id in moved]

    async def apply_reports(
        self,
        host_id: str,
        items: Sequence[tuple[VmReport, MatchResult]],
        *,
        fence: Fence | None = None,
    ) -> Stored:
        """Store a batch of VMs of one host in one transaction (:mod:`.reports`), which
        it shares with other hosts' batches that come at the same time.

        :class:`~.writes.LeaseLost` if the host's fence no longer holds; a batch
        PostgreSQL refuses raises for this host alone.
        """
        return await self._reports.submit(writes.HostReports(host_id, items, fence))

    async def _apply_many(
        self, batches: Sequence[writes.HostReports]
    ) -> list[Stored | writes.LeaseLost]:
        seen: set[str] = set()
        for batch in batches:
            ids = {r.vm_id for r, _ in batch.items}
            if ids & seen:  # one VM from two hosts (a rogue one): store them apart
                return [(await self._apply_many([b]))[0] for b in batches]
            seen |= ids
        async with self._pool.acquire() as conn, conn.transaction():
            outcomes = await writes.apply_many(conn, self._exec, batches)
        if any(isinstance(o, Stored) and o.changes for o in outcomes):
            self.metrics.db_writes += 1  # the history rows (a fetch: it returns their ids)
        if any(isinstance(o, Stored) and o.guests for o in outcomes):
            self.metrics.db_writes += 1  # the views' event ids (a fetch: it returns them)
        return outcomes


# The host's status, and its VMs' once it is not up: a VM whose host cannot be
# reached (or trusted) is in no state anyone knows. The VMs come back with the
# host's first poll, which reads their stored status again.
_HOST_STATUS_SQL = """
WITH host AS (
    UPDATE hosts SET status = $2, status_reason = $3,
        last_seen = CASE WHEN $2 = 'up' THEN now() ELSE last_seen END
    WHERE id = $1 AND (status IS DISTINCT FROM $2 OR status_reason IS DISTINCT FROM $3)
    RETURNING id
), vms AS (
    UPDATE vms SET status = 'unknown'
    WHERE host_id = $1 AND $2 <> 'up' AND status <> 'unknown'
    RETURNING id
)
SELECT (SELECT count(*) FROM host) + (SELECT count(*) FROM vms)
"""
