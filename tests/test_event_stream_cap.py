"""``/api/events``: a user holds at most ``max_event_streams_per_user`` streams (SPEC §19).

A real engine on loopback with a real PostgreSQL; streams are real HTTP
connections. Without credentials (loopback, no users) each address counts as a
user of its own.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from diskname.engine import EngineConfig, EngineService
from diskname.engine.db.users import UserStore
from diskname.engine.http.passwords import hash_password

from .conftest import started, wait_until

pytestmark = pytest.mark.timeout(60)
CAP = 2


@contextlib.asynccontextmanager
async def stream(
    base: str, headers: dict[str, str], source: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """An event stream held open for the block; yields its status."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    async with (
        aiohttp.ClientSession(base, connector=connector, headers=headers) as http,
        http.get("/api/events") as response,
    ):
        if response.status == 200:
            assert (await response.content.readline()).startswith(b": connected")
        yield response.status


async def status_of_one_more(base: str, headers: dict[str, str], source: str = "127.0.0.1") -> int:
    async with stream(base, headers, source) as status:
        return status


async def test_a_user_past_the_cap_gets_429_and_others_do_not(pg_dsn: str) -> None:
    async def users(store: UserStore) -> None:
        await store.add("alice", "viewer", hash_password("alice-password"))

    config = EngineConfig(
        dsn=pg_dsn,
        http_port=0,
        api_token="t0k",
        max_event_streams_per_user=CAP,
        events_keepalive=0.3,  # a dropped stream is noticed at its next keepalive
    )
    engine = EngineService(config, users_setup=users)
    async with started(engine):
        base = f"http://127.0.0.1:{engine.http_port}"
        token = {"Authorization": "Bearer t0k"}
        alice = {"Authorization": "Basic " + base64.b64encode(b"alice:alice-password").decode()}
        async with contextlib.AsyncExitStack() as held:
            for _ in range(CAP):
                assert await held.enter_async_context(stream(base, token)) == 200
            assert await status_of_one_more(base, token) == 429
            assert await status_of_one_more(base, alice) == 200

        async def quota_free() -> bool:
            return await status_of_one_more(base, token) == 200

        # Hung up: the quota is free again once the engine notices (its next keepalive).
        await wait_until(quota_free, timeout=5)


async def test_without_credentials_each_address_has_its_own_quota(pg_dsn: str) -> None:
    config = EngineConfig(dsn=pg_dsn, http_port=0, max_event_streams_per_user=CAP)
    engine = EngineService(config)
    async with started(engine):
        base = f"http://127.0.0.1:{engine.http_port}"
        async with contextlib.AsyncExitStack() as held:
            for _ in range(CAP):
                assert await held.enter_async_context(stream(base, {})) == 200
            assert await status_of_one_more(base, {}) == 429
            assert await status_of_one_more(base, {}, "127.0.0.2") == 200
