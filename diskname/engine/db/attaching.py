"""The actions' writes: VMs created and removed, disks attached, plugged, unplugged, detached.

The one-at-a-time writes live here; the set-based ones a burst of hot-plugs
shares (claims and outcomes) are :mod:`.plugs`, reached through
:meth:`Attaching.claim_plugs` and :meth:`Attaching.settle_plugs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from ..core.models import Attachment, DiskSpec, NameChange, VmRow
from ..errors import Conflict, NotFound
from . import intents, plugs
from .reports import insert_history
from .rows import Tables


class Attaching(Tables):
    # -- VMs --------------------------------------------------------------

    async def create_vm(
        self,
        vm: VmRow,
        root: Attachment,
        serial: str,
        disk: DiskSpec,
        engine_pid: int | None = None,
    ) -> None:
        """The VM with its root disk attached (not yet plugged: its plug is an intent)."""
        sql = "INSERT INTO vms (id, name, host_id, status) VALUES ($1, $2, $3, $4)"
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                await self._exec(conn, sql, vm.id, vm.name, vm.host_id, vm.status)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"VM {vm.id} exists") from None
            await self._insert_attachment(conn, root, serial, disk, plug=True)
            args = (root.vm_id, root.disk_id, intents.PLUG, engine_pid)
            await self._exec(conn, intents.RECORD_SQL, *args)

    async def delete_vm(self, vm_id: str) -> None:
        async with self._pool.acquire() as conn:
            await self._exec(conn, "DELETE FROM vms WHERE id = $1", vm_id)

    # -- disks ----------------------------------------------------------------

    async def remove_disk(self, disk_id: str) -> bool:
        """Delete a disk attached to no VM; False when it is attached (or gone)."""
        sql = """DELETE FROM disks WHERE id = $1
                 AND NOT EXISTS (SELECT 1 FROM vm_device WHERE disk_id = $1)"""
        async with self._pool.acquire() as conn:
            return await self._exec(conn, sql, disk_id) > 0

    async def delete_disk(self, disk_id: str) -> None:
        async with self._pool.acquire() as conn:
            await self._exec(conn, "DELETE FROM disks WHERE id = $1", disk_id)

    # -- attaching and plugging, one at a time -----------------------------------

    async def attach(
        self, att: Attachment, serial: str, new_disk: DiskSpec | None, *, plug: bool
    ) -> None:
        """Attach a disk (created first with ``new_disk``'s name and size when given).

        A new disk about to be plugged is "locked" until :meth:`mark_plugged`.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await self._insert_attachment(conn, att, serial, new_disk, plug=plug)

    async def claim_plug(
        self, vm_id: str, disk_id: str, device_id: str, engine_pid: int | None = None
    ) -> None:
        """Mark the attachment plugged *before* the host is asked to plug it, and
        record the intent (:mod:`.intents`) in the same transaction.

        The partial unique index on plugged disks makes this the one place where
        two requests to plug one disk into two VMs are told apart: the second is
        a :class:`Conflict`, whatever the timing, whichever engine serves it.
        """
        sql = """UPDATE vm_device SET is_plugged = true, device_id = $3
                 WHERE vm_id = $1 AND disk_id = $2"""
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                claimed = await self._exec(conn, sql, vm_id, disk_id, device_id)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"disk {disk_id} is plugged into another VM") from None
            if claimed:
                args = (vm_id, disk_id, intents.PLUG, engine_pid)
                await self._exec(conn, intents.RECORD_SQL, *args)

    async def release_plug(self, vm_id: str, disk_id: str) -> None:
        """The host did not plug it after all: undo :meth:`claim_plug`."""
        sql = "UPDATE vm_device SET is_plugged = false WHERE vm_id = $1 AND disk_id = $2"
        async with self._pool.acquire() as conn, conn.transaction():
            await self._exec(conn, sql, vm_id, disk_id)
            await self._exec(conn, intents.DROP_SQL, vm_id, disk_id)

    async def intend_unplug(self, vm_id: str, disk_id: str, engine_pid: int | None) -> None:
        """Record that the host is about to be asked to unplug the disk (:mod:`.intents`)."""
        async with self._pool.acquire() as conn:
            args = (vm_id, disk_id, intents.UNPLUG, engine_pid)
            await self._exec(conn, intents.RECORD_SQL, *args)

    async def drop_intent(self, vm_id: str, disk_id: str) -> None:
        """The host refused: nothing changed, the intent is over."""
        async with self._pool.acquire() as conn:
            await self._exec(conn, intents.DROP_SQL, vm_id, disk_id)

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
            await self._exec(conn, intents.DROP_SQL, vm_id, disk_id)
            await self._forget(conn, vm_id)

    async def mark_unplugged(self, vm_id: str, disk_id: str) -> NameChange | None:
        """The host unplugged the disk: its name is gone at once (with history), and
        the intent with it (one statement)."""
        sql = """WITH intent AS (DELETE FROM plug_intents WHERE vm_id = $1 AND disk_id = $2)
                 UPDATE vm_device SET is_plugged = false, logical_name = NULL,
                     logical_name_source = NULL, logical_name_seen_at = NULL, guest = NULL,
                     name_conflict = NULL
                 WHERE vm_id = $1 AND disk_id = $2"""
        return await self._drop_name(vm_id, disk_id, sql)

    async def detach(self, vm_id: str, disk_id: str) -> NameChange | None:
        sql = "DELETE FROM vm_device WHERE vm_id = $1 AND disk_id = $2"
        return await self._drop_name(vm_id, disk_id, sql)

    # -- hot-plugs, a batch at a time (:mod:`.plugs`) ---------------------------

    async def claim_plugs(self, claims: Sequence[plugs.Claim]) -> list[plugs.ClaimResult]:
        """Attach the disks as plugged, in one statement; per claim its serial or error."""
        async with self._pool.acquire() as conn:
            try:
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

    # -- the statements behind them ----------------------------------------------

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
            return (await insert_history(conn, self._exec, [change]))[0]

    async def _forget(self, conn: Any, vm_id: str) -> None:
        sql = "UPDATE vms SET hash = NULL WHERE id = $1 AND hash IS NOT NULL"
        await self._exec(conn, sql, vm_id)
