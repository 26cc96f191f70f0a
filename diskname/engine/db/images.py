"""Image intents: the floating disks an engine is making images for (SPEC §18, §19).

A floating disk is stored "locked" with its intent, in one transaction
(:meth:`.storage.StorageTables.add_floating_disk`); the outcome removes the
intent in the statement that sets the disk "ok" or "illegal" (:meth:`settle`).
An intent is *left* when its engine is gone: the backend of the lease connection
it names is no longer there (as for plug intents, :mod:`.intents`), nobody holds
it (``engine_pid`` NULL: let go), or it is older than any creation may take.
An engine resumes a left creation only after :meth:`claim` took it over in one
conditional statement, so two engines never resume the same disk at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.images import LeftImage
from .intents import ENGINE_APPLICATION, MAX_AGE
from .rows import Tables

# Whether intent ``i`` is left: nobody holds it, its engine is gone, or it is too old.
LEFT = f"""(i.engine_pid IS NULL
    OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                   WHERE a.pid = i.engine_pid AND a.application_name = '{ENGINE_APPLICATION}')
    OR i.created_at < now() - interval '{MAX_AGE}')"""

LEFT_SQL = f"""
SELECT i.disk_id::text, d.status, sd.host_id::text, sd.name,
       d.provisioned_size, d.format, d.sparse
FROM image_intents i JOIN disks d ON d.id = i.disk_id
LEFT JOIN storage_domains sd ON sd.id = d.storage_domain_id
WHERE {LEFT} ORDER BY i.created_at
"""
LEFT_EXISTS_SQL = f"SELECT 1 FROM image_intents i WHERE {LEFT}"
CLAIM_SQL = f"""
UPDATE image_intents i SET engine_pid = $2, created_at = now() WHERE i.disk_id = $1 AND {LEFT}
"""
RECORD_SQL = "INSERT INTO image_intents (disk_id, engine_pid) VALUES ($1, $2)"
# The outcome: the intent goes, a disk still locked takes it; was the disk still there?
SETTLE_SQL = """
WITH dropped AS (DELETE FROM image_intents WHERE disk_id = $1),
     settled AS (UPDATE disks SET status = $2, status_reason = $3
                 WHERE id = $1 AND status = 'locked' RETURNING 1)
SELECT EXISTS (SELECT 1 FROM disks WHERE id = $1) AS present,
       EXISTS (SELECT 1 FROM settled) AS changed
"""
RELEASE_SQL = """
UPDATE image_intents SET engine_pid = NULL
WHERE disk_id = $1 AND engine_pid IS NOT DISTINCT FROM $2
"""
FORGET_SQL = "DELETE FROM image_intents WHERE disk_id = $1"


@dataclass(frozen=True, slots=True)
class Settled:
    present: bool  # False: the disk was deleted meanwhile (its image may be left)
    changed: bool  # False: someone settled it first


class ImageIntents(Tables):
    async def left(self) -> list[LeftImage]:
        """Every creation left by an engine that is gone, oldest first."""
        return [LeftImage(*r.values()) for r in await self._pool.fetch(LEFT_SQL)]

    async def claim(self, disk_id: str, engine_pid: int) -> bool:
        """Take over a left creation; False if it is not left (any more)."""
        async with self._pool.acquire() as conn:
            return await self._exec(conn, CLAIM_SQL, disk_id, engine_pid) > 0

    async def settle(self, disk_id: str, status: str, reason: str | None = None) -> Settled:
        """The creation is over: a disk still "locked" becomes ``status``."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(SETTLE_SQL, disk_id, status, reason)
        if row["changed"]:
            self.metrics.db_writes += 1
        return Settled(row["present"], row["changed"])

    async def release(self, disk_id: str, engine_pid: int | None) -> None:
        """Let go of a creation whose outcome is unknown: the host's owner resumes it."""
        async with self._pool.acquire() as conn:
            await self._exec(conn, RELEASE_SQL, disk_id, engine_pid)

    async def forget(self, disk_id: str) -> None:
        """Drop the intent of a disk that is not locked any more."""
        async with self._pool.acquire() as conn:
            await self._exec(conn, FORGET_SQL, disk_id)
