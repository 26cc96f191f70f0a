"""REST users and their sign-in tokens in PostgreSQL (migration 0003).

A token is 32 random bytes handed to the user once; the database keeps only its
SHA-256 (a token has far too much entropy to need a slow hash, and a lookup by
digest reveals nothing about other tokens). Expired tokens are purged as new
ones are issued, and a user keeps at most ``MAX_TOKENS_PER_USER``: a script that
signs in in a loop and never signs out cannot grow the table without bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..errors import Conflict, Invalid

ROLES = ("admin", "viewer")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
MAX_TOKENS_PER_USER = 100


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    password_hash: str
    created_at: datetime

    @property
    def may_write(self) -> bool:
        return self.role == "admin"


def check_user(name: str, role: str) -> None:
    """Raise :class:`Invalid` unless ``name`` and ``role`` may be stored."""
    if not NAME.fullmatch(name):
        raise Invalid(
            f"user name {name!r} must be 1-128 letters, digits or . _ @ + - (starting with a "
            "letter or digit)"
        )
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}, not {role!r}")


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


_USER = "SELECT name, role, password_hash, created_at FROM users"


class UserStore:
    """Users and tokens over ``db``: the engine's pool (:class:`.pool.Pool`) or a connection."""

    def __init__(self, db: Any) -> None:
        self._db = db

    async def add(self, name: str, role: str, password_hash: str) -> None:
        check_user(name, role)
        sql = "INSERT INTO users (name, role, password_hash) VALUES ($1, $2, $3)"
        async with self._transaction() as conn:  # (the pool's errors come translated)
            try:
                await conn.execute(sql, name, role, password_hash)
            except asyncpg.UniqueViolationError:
                raise Conflict(f"user {name!r} exists") from None

    async def put(self, name: str, role: str, password_hash: str) -> None:
        """Create the user, or give an existing one this role and password (and
        sign it out everywhere)."""
        check_user(name, role)
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO users (name, role, password_hash) VALUES ($1, $2, $3) "
                "ON CONFLICT (name) DO UPDATE SET role = $2, password_hash = $3",
                name,
                role,
                password_hash,
            )
            await conn.execute("DELETE FROM user_tokens WHERE user_name = $1", name)

    async def remove(self, name: str) -> bool:
        """Delete the user (its tokens go with it); False if there was none."""
        status = await self._db.execute("DELETE FROM users WHERE name = $1", name)
        return bool(status != "DELETE 0")

    async def get(self, name: str) -> User | None:
        row = await self._db.fetchrow(_USER + " WHERE name = $1", name)
        return User(*row.values()) if row else None

    async def list(self) -> list[User]:
        return [User(*r.values()) for r in await self._db.fetch(_USER + " ORDER BY name")]

    async def any(self) -> bool:
        return bool(await self._db.fetchval("SELECT EXISTS (SELECT 1 FROM users)"))

    async def issue_token(self, name: str, lifetime: float) -> str:
        """A new token for user ``name``, valid ``lifetime`` seconds."""
        token = secrets.token_urlsafe(32)
        async with self._transaction() as conn:
            await conn.execute("DELETE FROM user_tokens WHERE expires_at < now()")
            await conn.execute(
                "INSERT INTO user_tokens (token_sha256, user_name, expires_at) "
                "VALUES ($1, $2, now() + make_interval(secs => $3))",
                token_digest(token),
                name,
                lifetime,
            )
            await conn.execute(
                "DELETE FROM user_tokens WHERE user_name = $1 AND token_sha256 NOT IN ("
                " SELECT token_sha256 FROM user_tokens WHERE user_name = $1"
                " ORDER BY issued_at DESC LIMIT $2)",
                name,
                MAX_TOKENS_PER_USER,
            )
        return token

    async def token_user(self, token: str) -> User | None:
        """The user a live (unexpired, unrevoked) ``token`` belongs to."""
        row = await self._db.fetchrow(
            "SELECT u.name, u.role, u.password_hash, u.created_at FROM user_tokens t"
            " JOIN users u ON u.name = t.user_name"
            " WHERE t.token_sha256 = $1 AND t.expires_at > now()",
            token_digest(token),
        )
        return User(*row.values()) if row else None

    async def live_tokens(self, digests: Sequence[bytes]) -> set[bytes]:
        """Which of these token digests are still live (unexpired, unrevoked, user there)."""
        rows = await self._db.fetch(
            "SELECT token_sha256 FROM user_tokens"
            " WHERE token_sha256 = ANY($1::bytea[]) AND expires_at > now()",
            digests,
        )
        return {bytes(r[0]) for r in rows}

    async def password_hashes(self, names: Sequence[str]) -> dict[str, str]:
        """The stored password hash of each of these users that still exists."""
        rows = await self._db.fetch(
            "SELECT name, password_hash FROM users WHERE name = ANY($1::text[])", names
        )
        return {r[0]: r[1] for r in rows}

    async def revoke(self, token: str) -> bool:
        status = await self._db.execute(
            "DELETE FROM user_tokens WHERE token_sha256 = $1", token_digest(token)
        )
        return bool(status != "DELETE 0")

    async def tokens(self) -> dict[str, int]:
        """Live tokens per user name."""
        rows = await self._db.fetch(
            "SELECT user_name, count(*) FROM user_tokens WHERE expires_at > now() GROUP BY 1"
        )
        return {r[0]: int(r[1]) for r in rows}

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A connection in a transaction, from a pool or the connection itself."""
        if isinstance(self._db, asyncpg.Connection):
            async with self._db.transaction():
                yield self._db
        else:
            async with self._db.acquire() as conn, conn.transaction():
                yield conn
