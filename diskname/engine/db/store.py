"""The engine's PostgreSQL access (asyncpg pool): queries for the API, the monitor's writes.

Every statement that changes rows is counted in ``Metrics.db_writes``, so a
steady fleet can be shown to cost zero writes. Applying a VM update is one
transaction whose last statement stores the hash: if anything before it
fails, the old hash stays and the next poll fetches again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..core.matching import MatchResult
from ..core.models import Attachment, Disk, DiskSpec, HostRow, NameChange, VmReport, VmRow
from ..core.search import NameFilter
from ..errors import Conflict, NotFound
from ..metrics import Metrics
from . import plugs
from . import reports as writes
from .batching import Coalescer
from .migrate import apply_migrations
from .reports import Fence, Stored

log = logging.getLogger(__name__)

# Hosts' report batches (up to 500 VMs each) stored in one transaction at most.
REPORT_BATCHES = 8

CLOSE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
# No statement of the engine's takes this long; one that does is on a dead
# connection (a silent network), and is better failed and retried.
COMMAND_TIMEOUT = 30.0
# The server probes idle clients, so a vanished engine's sessions (and locks,
# and open transactions) end within half a minute instead of hours.
KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}

# The database is down, restarting or unreachable: retry later, this is no bug.
UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)


_HOST_COLUMNS = "id::text, name, address, port, status, status_reason, token"
_ATTACHMENTS = """
SELECT vd.vm_id::text, vd.disk_id::text, vd.device_id::text, vd.interface, vd.is_plugged,
       vd.address, vd.logical_name, vd.logical_name_source, vd.logical_name_seen_at,
       d.name, d.provisioned_size, d.status, CASE WHEN d.storage_type = 'lun' THEN d.serial END
FROM vm_device vd JOIN disks d ON d.id = vd.disk_id
"""
_DISKS = """SELECT id::text, name, provisioned_size, status,
                  CASE WHEN storage_type = 'lun' THEN serial END FROM disks"""
_VMS = "SELECT id::text, name, status, host_id::text FROM vms"


def _rows_changed(status: str) -> int:
    """The row count at the end of a command tag (``UPDATE 3``, ``INSERT 0 1``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _attachment(row: Any) -> Attachment:
    values = list(row.values())  # the attachment's nine columns, then its disk's
    att = Attachment(*values[:9])
    return dataclasses.replace(att, disk=Disk(att.disk_id, *values[9:]))


def _by_name(where: list[str], args: list[Any], names: NameFilter | None) -> None:
    """Add the ``name`` condition of an oVirt search to a query's WHERE list."""
    if names is not None:
        args.append(names.like)
        operator = "LIKE" if names.case_sensitive else "ILIKE"
        where.append(f"name {operator} ${len(args)}")


def _filtered(
    select: str, names: NameFilter | None, limit: int | None, order: str
) -> tuple[str, list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    _by_name(where, args, names)
    sql = select + (" WHERE " + " AND ".join(where) if where else "") + f" ORDER BY {order}"
    if limit is not None:
        args.append(limit)
        sql += f" LIMIT ${len(args)}"
    return sql, args


async def _keep_session(conn: Any) -> None:
    """Release a connection to the pool as it is.

    asyncpg's default reset costs a round trip on *every* release (advisory
    locks, cursors, LISTEN, settings), which doubled the cost of a one-query
    read. The engine leaves no session state on pooled connections: its
    advisory locks live on the lease connection (:mod:`..hosts.leases`), the
    migration's lock is transaction-scoped, and an open transaction is still
    rolled back by asyncpg before this is called.
    """


class Store:
    """A pool of connections and the engine's queries."""

    def __init__(self, pool: Any, metrics: Metrics) -> None:
        self._pool = pool
        self.metrics = metrics
        # Hosts' batches that arrive together share a transaction (:mod:`.reports`).
        self._reports: Coalescer[writes.HostReports, Stored] = Coalescer(
            self._apply_many, max_batch=REPORT_BATCHES
        )
        self._states: Coalescer[str, dict[str, tuple[str | None, str]]] = Coalescer(
            self._vm_states_many, max_batch=100
        )

    @property
    def pool(self) -> Any:
        """The asyncpg pool, for the stores and read models beside this one (users, catalog)."""
        return self._pool

    @classmethod
    async def open(cls, dsn: str, metrics: Metrics, *, max_size: int = 10) -> Store:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings=KEEPALIVES,
            reset=_keep_session,
        )
        return cls(pool, metrics)

    async def close(self) -> None:
        """Wait for connections to be released, then terminate the stragglers."""
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("database pool did not close in %ss, terminating", CLOSE_TIMEOUT)
            self._pool.terminate()

    async def migrate(self) -> list[str]:
        async with self._pool.acquire() as conn:
            return await apply_migrations(conn)

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(2.0):
                return bool(await self._pool.fetchval("SELECT 1"))
        except (TimeoutError, asyncpg.PostgresError, *UNAVAILABLE):
            return False

    async def _exec(self, conn: Any, sql: str, *args: Any) -> int:
        changed = _rows_changed(await conn.execute(sql, *args))
        if changed:
            self.metrics.db_writes += 1
        return changed

    # -- hosts ------------------------------------------------------------

    async def list_hosts(self) -> list[HostRow]:
        rows = await self._pool.fetch(f"SELECT {_HOST_COLUMNS} FROM hosts ORDER BY name")
        return [HostRow(*r.values()) for r in rows]

    async def get_host(self, host_id: str) -> HostRow | None:
        row = await self._pool.fetchrow(f"SELECT {_HOST_COLUMNS} FROM hosts WHERE id = $1", host_id)
        return HostRow(*row.values()) if row else None

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

    async def set_host_status(self, host_id: str, status: str, reason: str | None = None) -> None:
        sql = """UPDATE hosts SET status = $2, status_reason = $3,
                     last_seen = CASE WHEN $2 = 'up' THEN now() ELSE last_seen END
                 WHERE id = $1
                   AND (status IS DISTINCT FROM $2 OR status_reason IS DISTINCT FROM $3)"""
        async with self._pool.acquire() as conn:
            await self._exec(conn, sql, host_id, status, reason)

    # -- VMs --------------------------------------------------------------

    async def list_vms(
        self, names: NameFilter | None = None, limit: int | None = None
    ) -> list[VmRow]:
        sql, args = _filtered(_VMS, names, limit, "name, id")
        return [VmRow(*r.values()) for r in await self._pool.fetch(sql, *args)]

    async def disk_names(self, vm_ids: Sequence[str]) -> list[set[str]]:
        """The names of the disks attached to each VM (one query for them all)."""
        rows = await self._pool.fetch(
            """SELECT vd.vm_id::text, d.name FROM vm_device vd JOIN disks d ON d.id = vd.disk_id
               WHERE vd.vm_id = ANY($1::uuid[])""",
            sorted(set(vm_ids)),
        )
        names: dict[str, set[str]] = {vm: set() for vm in vm_ids}
        for r in rows:
            if r["name"] is not None:
                names[r["vm_id"]].add(r["name"])
        return [names[vm] for vm in vm_ids]

    async def get_vms(self, vm_ids: Sequence[str]) -> list[VmRow | Exception]:
        """Each VM, or :class:`NotFound` in its place (one query for them all)."""
        rows = await self._pool.fetch(
            "SELECT id::text, name, status, host_id::text FROM vms WHERE id = ANY($1::uuid[])",
            list(vm_ids),
        )
        found = {r["id"]: VmRow(*r.values()) for r in rows}
        return [found.get(vm_id) or NotFound(f"no VM {vm_id}") for vm_id in vm_ids]

    async def get_vm(self, vm_id: str) -> VmRow | None:
        row = await self._pool.fetchrow(f"{_VMS} WHERE id = $1", vm_id)
        return VmRow(*row.values()) if row else None

    async def vm_states(self, host_id: str) -> dict[str, tuple[str | None, str]]:
        """(stored hash, status) of every VM on the host.

        Monitors that load at the same time (an engine starting under a fleet of
        500 hosts) share one query.
        """
        return await self._states.submit(host_id)

    async def _vm_states_many(
        self, host_ids: Sequence[str]
    ) -> list[dict[str, tuple[str | None, str]]]:
        rows = await self._pool.fetch(
            "SELECT host_id::text, id::text, hash, status FROM vms WHERE host_id = ANY($1::uuid[])",
            sorted(set(host_ids)),
        )
        states: dict[str, dict[str, tuple[str | None, str]]] = {h: {} for h in host_ids}
        for r in rows:
            states[r["host_id"]][r["id"]] = (r["hash"], r["status"])
        return [states[h] for h in host_ids]

    async def set_vm_status(self, vm_id: str, status: str) -> None:
        sql = "UPDATE vms SET status = $2 WHERE id = $1 AND status IS DISTINCT FROM $2"
        async with self._pool.acquire() as conn:
            await self._exec(conn, sql, vm_id, status)

    async def forget_hash(self, vm_id: str) -> None:
        """Make the next poll or notification fetch this VM whatever its hash."""
        sql = "UPDATE vms SET hash = NULL WHERE id = $1 AND hash IS NOT NULL"
        async with self._pool.acquire() as conn:
            await self._exec(conn, sql, vm_id)

    async def create_vm(self, vm: VmRow, root: Attachment, serial: str, disk: DiskSpec) -> None:
        """The VM with its root disk attached (not yet plugged)."""
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await self._exec(
                    conn,
                    "INSERT INTO vms (id, name, host_id, status) VALUES ($1, $2, $3, $4)",
                    vm.id,
                    vm.name,
                    vm.host_id,
                    vm.status,
                )
            except asyncpg.UniqueViolationError:
                raise Conflict(f"VM {vm.id} exists") from None
            await self._insert_attachment(conn, root, serial, disk, plug=True)

    async def delete_vm(self, vm_id: str) -> None:
        async with self._pool.acquire() as conn:
            await self._exec(conn, "DELETE FROM vms WHERE id = $1", vm_id)

    # -- attachments --------------------------------------------------------

    async def list_attachments(self, vm_id: str) -> list[Attachment]:
        return await self.attachments_of([vm_id])

    async def attachments_of(self, vm_ids: Sequence[str]) -> list[Attachment]:
        """The attachments of several VMs in one query, by VM then disk."""
        rows = await self._pool.fetch(
            f"{_ATTACHMENTS} WHERE vd.vm_id = ANY($1::uuid[]) ORDER BY vd.vm_id, vd.disk_id",
            list(vm_ids),
        )
        return [_attachment(r) for r in rows]

    async def get_attachment(self, vm_id: str, disk_id: str) -> Attachment | None:
        row = await self._pool.fetchrow(
            f"{_ATTACHMENTS} WHERE vd.vm_id = $1 AND vd.disk_id = $2", vm_id, disk_id
        )
        return _attachment(row) if row else None

    # -- disks ----------------------------------------------------------------

    async def list_disks(
        self, names: NameFilter | None = None, limit: int | None = None
    ) -> list[Disk]:
        sql, args = _filtered(_DISKS, names, limit, "name, id")
        return [Disk(*r.values()) for r in await self._pool.fetch(sql, *args)]

    async def get_disk(self, disk_id: str) -> Disk | None:
        row = await self._pool.fetchrow(f"{_DISKS} WHERE id = $1", disk_id)
        return Disk(*row.values()) if row else None

    async def disk_users(self, disk_id: str) -> list[str]:
        """The VMs the disk is attached to."""
        rows = await self._pool.fetch(
            "SELECT vm_id::text FROM vm_device WHERE disk_id = $1 ORDER BY vm_id", disk_id
        )
        return [r["vm_id"] for r in rows]

    async def remove_disk(self, disk_id: str) -> bool:
        """Delete a disk attached to no VM; False when it is attached (or gone)."""
        sql = """DELETE FROM disks WHERE id = $1
                 AND NOT EXISTS (SELECT 1 FROM vm_device WHERE disk_id = $1)"""
        async with self._pool.acquire() as conn:
            return await self._exec(conn, sql, disk_id) > 0

    async def disk_serial(self, disk_id: str) -> str | None:
        """The disk's serial, or None when there is no such disk."""
        serial: str | None = await self._pool.fetchval(
            "SELECT serial FROM disks WHERE id = $1", disk_id
        )
        return serial

    async def delete_disk(self, disk_id: str) -> None:
        async with self._pool.acquire() as conn:
            await self._exec(conn, "DELETE FROM disks WHERE id = $1", disk_id)

    async def claim_plug(self, vm_id: str, disk_id: str, device_id: str) -> None:
        """Mark the attachment plugged *before* the host is asked to plug it.

        The partial unique index on plugged disks makes this the one place where
        two requests to plug one disk into two VMs are told apart: the second is
        a :class:`Conflict`, whatever the timing, whichever engine serves it.
        """
        sql = """UPDATE vm_device SET is_plugged = true, device_id = $3
                 WHERE vm_id = $1 AND disk_id = $2"""
        async with self._pool.acquire() as conn:
            try:
                await self._exec(conn, sql, vm_id, disk_id, device_id)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"disk {disk_id} is plugged into another VM") from None

    async def release_plug(self, vm_id: str, disk_id: str) -> None:
        """The host did not plug it after all: undo :meth:`claim_plug`."""
        sql = "UPDATE vm_device SET is_plugged = false WHERE vm_id = $1 AND disk_id = $2"
        async with self._pool.acquire() as conn:
            await self._exec(conn, sql, vm_id, disk_id)

    async def attach(
        self, att: Attachment, serial: str, new_disk: DiskSpec | None, *, plug: bool
    ) -> None:
        """Attach a disk (created first with ``new_disk``'s name and size when given).

        A new disk about to be plugged is "locked" until :meth:`mark_plugged`.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await self._insert_attachment(conn, att, serial, new_disk, plug=plug)

    async def _insert_lun(self, conn: Any, disk_id: str, lun: DiskSpec, *, plug: bool) -> None:
        """A direct-LUN disk: it keeps the LUN's serial, and one LUN is one disk."""
        sql = """INSERT INTO disks (id, serial, name, provisioned_size, status, storage_type)
                 VALUES ($1, $2, $3, $4, $5, 'lun')"""
        status = "locked" if plug else "ok"
        try:
            await self._exec(
                conn, sql, disk_id, lun.lun_serial, lun.name, lun.provisioned_size, status
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(
                f"a direct-LUN disk with serial {lun.lun_serial!r} exists: attach it by its id"
            ) from None

    async def _insert_attachment(
        self, conn: Any, att: Attachment, serial: str, new_disk: DiskSpec | None, *, plug: bool
    ) -> None:
        if new_disk is not None and new_disk.lun_serial is not None:
            await self._insert_lun(conn, att.disk_id, new_disk, plug=plug)
        elif new_disk is not None:
            await self._exec(
                conn,
                """INSERT INTO disks (id, serial, name, provisioned_size, status)
                   VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
                att.disk_id,
                serial,
                new_disk.name,
                new_disk.provisioned_size,
                "locked" if plug else "ok",
            )
        sql = """INSERT INTO vm_device (vm_id, disk_id, device_id, interface, is_plugged)
                 VALUES ($1, $2, $3, $4, false)"""
        try:
            await self._exec(conn, sql, att.vm_id, att.disk_id, att.device_id, att.interface)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"disk {att.disk_id} is already attached to VM {att.vm_id}") from None

    async def mark_plugged(
        self, vm_id: str, disk_id: str, device_id: str, address: str | None
    ) -> None:
        """The host plugged the disk: record it and forget the VM's hash."""
        sql = """UPDATE vm_device SET is_plugged = true, device_id = $3,
                     address = COALESCE($4, address)
                 WHERE vm_id = $1 AND disk_id = $2"""
        ready = "UPDATE disks SET status = 'ok' WHERE id = $1 AND status <> 'ok'"
        async with self._pool.acquire() as conn, conn.transaction():
            await self._exec(conn, sql, vm_id, disk_id, device_id, address)
            await self._exec(conn, ready, disk_id)
            await self._forget(conn, vm_id)

    async def mark_unplugged(self, vm_id: str, disk_id: str) -> NameChange | None:
        """The host unplugged the disk: its name is gone at once (with history)."""
        sql = """UPDATE vm_device SET is_plugged = false, logical_name = NULL,
                     logical_name_source = NULL, logical_name_seen_at = NULL
                 WHERE vm_id = $1 AND disk_id = $2"""
        return await self._drop_name(vm_id, disk_id, sql)

    async def detach(self, vm_id: str, disk_id: str) -> NameChange | None:
        sql = "DELETE FROM vm_device WHERE vm_id = $1 AND disk_id = $2"
        return await self._drop_name(vm_id, disk_id, sql)

    async def _drop_name(self, vm_id: str, disk_id: str, sql: str) -> NameChange | None:
        async with self._pool.acquire() as conn, conn.transaction():
            old = await conn.fetchval(
                "SELECT logical_name FROM vm_device WHERE vm_id = $1 AND disk_id = $2 FOR UPDATE",
                vm_id,
                disk_id,
            )
            await self._exec(conn, sql, vm_id, disk_id)
            await self._forget(conn, vm_id)
            if old is None:
                return None
            change = NameChange(vm_id, disk_id, old, None, "unplug", datetime.now(UTC))
            self.metrics.db_writes += 1  # the history row
            return (await writes.insert_history(conn, self._exec, [change]))[0]

    async def _forget(self, conn: Any, vm_id: str) -> None:
        sql = "UPDATE vms SET hash = NULL WHERE id = $1 AND hash IS NOT NULL"
        await self._exec(conn, sql, vm_id)

    # -- hot-plugs, a batch at a time (:mod:`.plugs`) ---------------------------

    async def claim_plugs(self, claims: Sequence[plugs.Claim]) -> list[plugs.ClaimResult]:
        """Attach the disks as plugged, in one statement; per claim its serial or error."""
        try:
            async with self._pool.acquire() as conn:
                results = await plugs.claim(conn, self._exec, claims)
        except asyncpg.ForeignKeyViolationError:
            if len(claims) > 1:
                raise  # the batch is retried claim by claim
            return [NotFound(f"no VM {claims[0].vm_id}")]
        if any(isinstance(r, str) for r in results):
            self.metrics.db_writes += 1  # the claims (their rows read back through a fetch)
        return results

    async def settle_plugs(self, outcomes: Sequence[plugs.Outcome]) -> list[plugs.OutcomeResult]:
        """Record how each claim's host call ended, in one statement (one transaction)."""
        async with self._pool.acquire() as conn:
            results = await plugs.settle(conn, outcomes)
        if outcomes:
            self.metrics.db_writes += 1  # the claims settled (read back through a fetch)
        return results

    # -- the monitor's update -------------------------------------------------

    async def apply_report(
        self, host_id: str, report: VmReport, match: MatchResult
    ) -> list[NameChange]:
        """Store one VM's devices and names (see :meth:`apply_reports`)."""
        return (await self.apply_reports(host_id, [(report, match)])).changes

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
        return outcomes

    async def history(self, vm_id: str, disk_id: str) -> list[tuple[str | None, str | None]]:
        rows = await self._pool.fetch(
            """SELECT old_name, new_name FROM logical_name_history
               WHERE vm_id = $1 AND disk_id = $2 ORDER BY id""",
            vm_id,
            disk_id,
        )
        return [(r["old_name"], r["new_name"]) for r in rows]
