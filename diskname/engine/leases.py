"""Which engine monitors which host: PostgreSQL session advisory locks.

Every engine holds one dedicated connection (``application_name`` =
``diskname-engine``). A host is owned by the engine whose connection holds the
host's advisory lock, so at most one engine polls it at a time. Each engine
takes at most its fair share, ceil(hosts / live engines), and hands back what
exceeds it, so a new engine gets work within one balancing round. When an
engine dies its connection closes, PostgreSQL drops its locks, and the others
pick the hosts up on their next round (rounds run twice per refresh interval).

The same connection carries ``pg_notify`` messages: an engine that acted on a
VM of a host it does not own tells the owner to fetch that VM again.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

APPLICATION_NAME = "diskname-engine"
ACTION_CHANNEL = "diskname_vm_action"
LOCK_CLASS = 0x646E  # "dn": the first key of the two-key advisory lock space


class LeasesLost(Exception):
    """The lease connection broke: every lock it held is gone."""


def _spread(engine_key: str, host_id: str) -> bytes:
    """An order of candidate hosts that differs per engine, to avoid contention."""
    return hashlib.blake2b(f"{engine_key}/{host_id}".encode(), digest_size=8).digest()


class Leases:
    def __init__(self, dsn: str, engine_key: str, on_action: Callable[[str], None]) -> None:
        self._dsn, self._key, self._on_action = dsn, engine_key, on_action
        self._conn: Any = None
        self.owned: set[str] = set()

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self.owned.clear()
            self._conn = await asyncpg.connect(
                self._dsn, server_settings={"application_name": APPLICATION_NAME}
            )
            await self._conn.add_listener(ACTION_CHANNEL, self._notified)
        return self._conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_action(payload)

    async def close(self) -> None:
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None
        self.owned.clear()

    async def balance(self, host_ids: Iterable[str]) -> set[str]:
        """One round: release what exceeds our share, take free hosts up to it."""
        hosts = set(host_ids)
        try:
            conn = await self._connection()
            engines = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                APPLICATION_NAME,
            )
            share = math.ceil(len(hosts) / max(1, engines))
            for host in sorted(self.owned - hosts) + self._surplus(share, hosts):
                await self._unlock(conn, host)
            await self._take(conn, hosts, share)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._drop()
            raise LeasesLost(str(exc)) from exc
        return set(self.owned)

    def _surplus(self, share: int, hosts: set[str]) -> list[str]:
        mine = sorted(self.owned & hosts, key=lambda h: _spread(self._key, h))
        return mine[share:]

    async def _take(self, conn: Any, hosts: set[str], share: int) -> None:
        free = sorted(hosts - self.owned, key=lambda h: _spread(self._key, h))
        for host in free:
            if len(self.owned) >= share:
                return
            if await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, host
            ):
                self.owned.add(host)

    async def _unlock(self, conn: Any, host: str) -> None:
        await conn.fetchval("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, host)
        self.owned.discard(host)

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self.owned.clear()
        if conn is not None:
            conn.terminate()

    async def announce_action(self, vm_id: str) -> None:
        """Tell the owner of the VM's host to fetch it again."""
        try:
            conn = await self._connection()
            await conn.execute("SELECT pg_notify($1, $2)", ACTION_CHANNEL, vm_id)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("cannot announce an action on VM %s: %s", vm_id, exc)
