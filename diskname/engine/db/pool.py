"""The engine's connection pool, and the one place where asyncpg's errors become the engine's.

As httpcore's ``map_exceptions``: every statement the stores run goes through
:class:`Pool`, and whatever asyncpg or the network raises leaves it as one of
:mod:`..errors`: a lost, refused or unreachable database is
:class:`~..errors.Unavailable` (a statement that got no answer in time,
:class:`~..errors.DatabaseTimeout`), anything else PostgreSQL refuses is
:class:`~..errors.DatabaseRefused`. Errors a store expects (a unique or foreign
key violation) are caught inside the ``acquire`` block, before they reach here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg

from ..errors import DatabaseRefused, DatabaseTimeout, Unavailable

log = logging.getLogger(__name__)

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
UNAVAILABLE_MESSAGE = "database unavailable, try again"

# The database is down, restarting or unreachable: retry later, this is no bug.
# (TimeoutError is an OSError: it is told apart before these.)
_CONNECTION_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    # A connection that lost its server in the middle of a reply (a failover):
    # asyncpg then refuses the next statement on it.
    asyncpg.exceptions.InternalClientError,
)


@contextlib.contextmanager
def translated() -> Iterator[None]:
    """Turn asyncpg's and the network's errors raised inside into the engine's own."""
    try:
        yield
    except TimeoutError as exc:
        raise DatabaseTimeout(UNAVAILABLE_MESSAGE) from exc
    except _CONNECTION_ERRORS as exc:
        raise Unavailable(UNAVAILABLE_MESSAGE) from exc
    except asyncpg.PostgresError as exc:
        raise DatabaseRefused(f"the database refused a statement: {exc}") from exc


async def _keep_session(conn: Any) -> None:
    """Release a connection to the pool as it is.

    asyncpg's default reset costs a round trip on *every* release (advisory
    locks, cursors, LISTEN, settings), which doubled the cost of a one-query
    read. The engine leaves no session state on pooled connections: its
    advisory locks live on the lease connection (:mod:`..hosts.leases`), the
    migration's lock is transaction-scoped, and an open transaction is still
    rolled back by asyncpg before this is called.
    """


class Pool:
    """asyncpg's pool (or anything shaped like it), its errors translated."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, dsn: str, *, max_size: int = 10) -> Pool:
        with translated():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=max_size,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                server_settings=KEEPALIVES,
                reset=_keep_session,
            )
        return cls(pool)

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A connection (asyncpg's own: a store catches what it expects inside the block)."""
        with translated():
            async with self._pool.acquire() as conn:
                try:
                    yield conn
                except _CONNECTION_ERRORS:
                    # Never back into the pool: it may be half-way through a reply
                    # (released as it is, without asyncpg's reset query).
                    conn.terminate()
                    raise

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.acquire() as conn:
            rows: list[Any] = await conn.fetch(sql, *args)
            return rows

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(sql, *args)

    async def execute(self, sql: str, *args: Any) -> str:
        async with self.acquire() as conn:
            status: str = await conn.execute(sql, *args)
            return status

    async def close(self) -> None:
        """Wait for connections to be released, then terminate the stragglers."""
        try:
            await asyncio.wait_for(self._pool.close(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("database pool did not close in %ss, terminating", CLOSE_TIMEOUT)
            self._pool.terminate()


def rows_changed(status: str) -> int:
    """The row count at the end of a command tag (``UPDATE 3``, ``INSERT 0 1``)."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0
