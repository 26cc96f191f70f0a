"""Apply the SQL files in ``migrations/`` in order, once each, under an advisory lock.

Two engines starting against one database must not both migrate: the
transaction-scoped advisory lock makes the second wait, then find nothing to do.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

# An arbitrary, fixed key: "diskname" read as ASCII, folded into a bigint.
_LOCK_KEY = int.from_bytes(b"disknam", "big")

_CREATE_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


def migration_files() -> list[tuple[str, str]]:
    """(version, SQL) of every bundled migration, in order."""
    folder = resources.files(__package__).joinpath("migrations")
    files = [f for f in folder.iterdir() if f.name.endswith(".sql")]
    return [(f.name.removesuffix(".sql"), f.read_text("utf-8")) for f in sorted(files, key=str)]


async def apply_migrations(conn: Any) -> list[str]:
    """Apply the missing migrations on ``conn`` (an asyncpg connection); return their versions."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(_CREATE_VERSIONS)
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, sql in migration_files():
            if version in done:
                continue
            log.info("applying migration %s", version)
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
            applied.append(version)
    return applied
