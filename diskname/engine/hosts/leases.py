"""Which engine monitors which host: PostgreSQL session advisory locks.

Every engine holds one dedicated connection (``application_name`` =
``diskname-engine``). A host is owned by the engine whose connection holds the
host's advisory lock, so at most one engine polls it at a time. Each engine
takes at most its fair share, ceil(hosts / live engines), and hands back what
exceeds it, so a new engine gets work within one balancing round. When an
engine dies its connection closes, PostgreSQL drops its locks, and the others
pick the hosts up on their next round (rounds run twice per refresh interval).

The connection has one owner, the task in :meth:`Leases.run`: balancing rounds
and announcements are jobs on its queue, never two at once on the wire. It has
a command timeout, and the server ends it after ``idle_session_timeout`` of
silence (a connection cut without a word, through a proxy that stopped
forwarding, is idle to the server), freeing its locks for another engine. An
engine whose lease connection failed holds nothing from then on, and its
writes are fenced (:meth:`Leases.fence`): the store checks, inside each
transaction, that the lock is still held by this connection's backend.

The same connection carries ``pg_notify`` messages: an engine that acted on a
VM of a host it does not own tells the owner to fetch that VM again, and every
engine hears the name changes the others store (:data:`..db.reports.NAMES_CHANNEL`),
for its event stream and the requests waiting for a name. A notification sent
while this connection is down is lost: such a waiter answers at its timeout,
from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from ..db.reports import NAMES_CHANNEL, Fence

log = logging.getLogger(__name__)

APPLICATION_NAME = "diskname-engine"
ACTION_CHANNEL = "diskname_vm_action"
LOCK_CLASS = 0x646E  # "dn": the first key of the two-key advisory lock space
COMMAND_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
MIN_IDLE_SESSION_TIMEOUT = 10.0
T = TypeVar("T")


class LeasesLost(Exception):
    """The lease connection broke: every lock it held is gone."""


def _spread(engine_key: str, host_id: str) -> bytes:
    """An order of candidate hosts that differs per engine, to avoid contention."""
    return hashlib.blake2b(f"{engine_key}/{host_id}".encode(), digest_size=8).digest()


def server_settings(period: float) -> dict[str, str]:
    """Settings of the lease connection: silence longer than a few rounds ends it."""
    idle = max(MIN_IDLE_SESSION_TIMEOUT, 4 * period)
    return {
        "application_name": APPLICATION_NAME,
        "idle_session_timeout": str(int(idle * 1000)),
        "tcp_keepalives_idle": "5",
        "tcp_keepalives_interval": "2",
        "tcp_keepalives_count": "3",
    }


@dataclass(slots=True)
class _Job:
    run: Callable[[Any], Awaitable[Any]]
    done: asyncio.Future[Any]


class Leases:
    def __init__(
        self,
        dsn: str,
        engine_key: str,
        on_action: Callable[[str], None],
        *,
        period: float = 1.5,
        on_name: Callable[[str], None] | None = None,
    ) -> None:
        self._dsn, self._key, self._on_action = dsn, engine_key, on_action
        self._on_name = on_name
        self._period = period
        self._conn: Any = None
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self.owned: set[str] = set()
        self.pid: int | None = None

    # -- the owner task --------------------------------------------------------

    async def run(self) -> None:
        """Serve jobs on the lease connection, one at a time, until cancelled."""
        try:
            while True:
                job = await self._jobs.get()
                if job.done.cancelled():
                    continue
                try:
                    result = await self._in_connection(job.run)
                except LeasesLost as exc:
                    if not job.done.done():  # its caller may have given up meanwhile
                        job.done.set_exception(exc)
                else:
                    if not job.done.done():
                        job.done.set_result(result)
        finally:
            await self._drop(close=True)

    async def _submit(self, run: Callable[[Any], Awaitable[T]]) -> T:
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._jobs.put(_Job(run, done))
        return await done

    async def _in_connection(self, run: Callable[[Any], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(COMMAND_TIMEOUT * 2):
                return await run(await self._connection())
        except (
            TimeoutError,
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.InternalClientError,
        ) as exc:
            await self._drop(close=False)
            raise LeasesLost(str(exc) or type(exc).__name__) from exc

    async def _connection(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self.owned.clear()
            self.pid = None
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=server_settings(self._period),
            )
            self.pid = self._conn.get_server_pid()
            await self._conn.add_listener(ACTION_CHANNEL, self._notified)
            if self._on_name is not None:
                await self._conn.add_listener(NAMES_CHANNEL, self._named)
        return self._conn

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._on_action(payload)

    def _named(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._on_name is not None:
            self._on_name(payload)

    async def _drop(self, *, close: bool) -> None:
        conn, self._conn = self._conn, None
        self.owned.clear()
        self.pid = None
        if conn is None or conn.is_closed():
            return
        if close:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(COMMAND_TIMEOUT):
                    await conn.close()
                return
        conn.terminate()

    # -- what the engine asks ----------------------------------------------------

    async def balance(self, host_ids: Iterable[str]) -> set[str]:
        """One round: release what exceeds our share, take free hosts up to it."""
        hosts = set(host_ids)
        await self._submit(lambda conn: self._balance(conn, hosts))
        return set(self.owned)

    async def announce_action(self, vm_id: str) -> None:
        """Tell the owner of the VM's host to fetch it again."""
        try:
            await self._submit(
                lambda conn: conn.execute("SELECT pg_notify($1, $2)", ACTION_CHANNEL, vm_id)
            )
        except LeasesLost as exc:
            log.warning("cannot announce an action on VM %s: %s", vm_id, exc)

    def fence(self, host_id: str) -> Fence | None:
        """What a write for ``host_id`` must find still held; None: we do not own it."""
        if host_id not in self.owned or self.pid is None:
            return None
        return Fence(LOCK_CLASS, self.pid)

    # -- inside the owner task ------------------------------------------------------

    async def _balance(self, conn: Any, hosts: set[str]) -> None:
        engines = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = $1 AND datname = current_database()",
            APPLICATION_NAME,
        )
        share = math.ceil(len(hosts) / max(1, engines))
        for host in sorted(self.owned - hosts) + self._surplus(share, hosts):
            await conn.fetchval("SELECT pg_advisory_unlock($1, hashtext($2))", LOCK_CLASS, host)
            self.owned.discard(host)
        free = sorted(hosts - self.owned, key=lambda h: _spread(self._key, h))
        # As many at a time as we still may take: an engine starting under 500
        # hosts claims them in one round trip, not 500.
        while free and len(self.owned) < share:
            need = share - len(self.owned)
            chunk, free = free[:need], free[need:]
            taken = await conn.fetch(_TRY_LOCKS_SQL, LOCK_CLASS, chunk)
            self.owned.update(r["host"] for r in taken)

    def _surplus(self, share: int, hosts: set[str]) -> list[str]:
        mine = sorted(self.owned & hosts, key=lambda h: _spread(self._key, h))
        return mine[share:]


_TRY_LOCKS_SQL = """
SELECT u.host FROM unnest($2::text[]) WITH ORDINALITY AS u(host, n)
WHERE pg_try_advisory_lock($1, hashtext(u.host)) ORDER BY u.n
"""
