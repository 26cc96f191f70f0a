"""Event streams end with their sign-in (SPEC §19, issue 23 acceptance 3).

A real engine on port 0 and real users in PostgreSQL: a stream opened with a
token (header or ``?access_token=``) or a password ends within a second of the
token being signed out, expiring or its user being removed, here or by another
process. The bookkeeping alone is tested without a database.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg
import pytest

from diskname.engine.db.users import token_digest
from diskname.engine.events import Subscription
from diskname.engine.http.sessions import Credential, StreamBook

from .test_engine_auth import LOGOUT, PASSWORDS, Engine, basic, bearer, engine

pytestmark = pytest.mark.timeout(60)
WITHIN = 1.0


class Stream:
    """An open ``/api/events`` response: when it ended, and its last event."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.ended_at: float | None = None
        self.lines: list[bytes] = []

    async def read_to_end(self) -> None:
        async for line in self.response.content:
            self.lines.append(line)
        self.ended_at = time.monotonic()


async def open_stream(
    e: Engine, path: str, headers: dict[str, str]
) -> tuple[Stream, asyncio.Task[None]]:
    response = await e.http.get(e.base + path, headers=headers)
    assert response.status == 200
    assert (await response.content.readline()).startswith(b": connected")
    stream = Stream(response)
    return stream, asyncio.create_task(stream.read_to_end())


async def ended_within(stream: Stream, task: asyncio.Task[None], since: float) -> float:
    """Seconds from ``since`` to the stream's end; fails past WITHIN."""
    await asyncio.wait_for(task, WITHIN + 0.5)
    assert stream.ended_at is not None
    took = stream.ended_at - since
    print(f"stream ended {took * 1000:.0f} ms after its credential did")
    assert took < WITHIN, took
    assert b"event: end\n" in stream.lines
    stream.response.release()
    return took


@pytest.mark.parametrize("via", ["header", "query"])
async def test_signing_out_ends_the_streams_of_that_token_only(pg_dsn: str, via: str) -> None:
    async with engine(pg_dsn) as e:
        token, other = await e.token("bob"), await e.token("bob")
        path = f"/api/events?access_token={token}" if via == "query" else "/api/events"
        stream, task = await open_stream(e, path, {} if via == "query" else bearer(token))
        kept, kept_task = await open_stream(e, "/api/events", bearer(other))
        since = time.monotonic()
        status, _, _ = await e.request("POST", LOGOUT, data={"token": token})
        assert status == 200
        await ended_within(stream, task, since)
        assert not kept_task.done()
        kept_task.cancel()
        kept.response.release()


async def test_an_expired_token_ends_its_stream_within_a_second(pg_dsn: str) -> None:
    async with engine(pg_dsn, session_lifetime=1.0) as e:
        token = await e.token("bob")
        stream, task = await open_stream(e, f"/api/events?access_token={token}", {})
        await asyncio.wait_for(task, 1.0 + WITHIN + 1.0)
        # How long after its expiry, by the database's clock, the stream was seen to end.
        conn = await asyncpg.connect(pg_dsn)
        try:
            late = await conn.fetchval(
                "SELECT extract(epoch FROM now() - expires_at)::float FROM user_tokens"
                " WHERE token_sha256 = $1",
                token_digest(token),
            )
        finally:
            await conn.close()
        print(f"expired stream ended at most {late * 1000:.0f} ms after the token expired")
        assert 0 < late < WITHIN
        assert b"event: end\n" in stream.lines
        assert (await e.request("GET", "/api/me", bearer(token)))[0] == 401


async def test_removing_a_user_ends_its_token_and_password_streams(pg_dsn: str) -> None:
    async with engine(pg_dsn) as e:
        token = await e.token("bob")
        by_token = await open_stream(e, "/api/events", bearer(token))
        by_password = await open_stream(e, "/api/events", basic("bob", PASSWORDS["bob"]))
        alice = await open_stream(e, "/api/events", basic("alice", PASSWORDS["alice"]))
        since = time.monotonic()
        assert await e.users.remove("bob")  # as `diskname user remove` does, from outside
        await ended_within(*by_token, since)
        await ended_within(*by_password, since)
        assert not alice[1].done()
        alice[1].cancel()
        alice[0].response.release()


def test_the_book_ends_only_the_streams_of_stale_credentials() -> None:
    book = StreamBook()
    live, dead = Credential.token("live"), Credential.token("dead")
    same, changed = Credential.password("a", "h1"), Credential.password("b", "h1")
    streams = {c: Subscription() for c in (live, dead, same, changed)}
    for credential, stream in streams.items():
        book.add(credential, stream)
    stale = book.stale({bytes(live.key)}, {"a": "h1", "b": "h2"})
    assert set(stale) == {dead, changed}
    for credential in stale:
        assert book.end(credential, "gone") == 1
    assert {c for c, s in streams.items() if s.ended} == {dead, changed}
    assert set(book.credentials()) == {live, same}
    book.discard(live, streams[live])
    assert book.credentials() == [same]
