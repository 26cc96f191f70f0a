"""Sign-in that nobody can keep the admin out of (SPEC §19, issue 23 acceptance 3).

A real engine on port 0 with real users in PostgreSQL; loopback addresses
127.0.0.2 and up are distinct clients (Linux routes all of 127/8 to lo). Failures
are throttled per (user, address) and per address, never per user alone; the
password hashing slots go first to addresses that are not failing, so a spray
from many addresses leaves a real sign-in quick. The fair order alone is tested
without a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from diskname.engine.http.fairness import FairOrder, Full

from .test_engine_auth import PASSWORDS, SSO, engine

SPRAY, SPRAY_ADDRESSES = 150, 20
REAL_SIGN_IN_WITHIN = 2.0


@contextlib.asynccontextmanager
async def client(source: str) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


async def sign_in(http: aiohttp.ClientSession, base: str, user: str, password: str) -> int:
    form = {"grant_type": "password", "scope": "ovirt-app-api"}
    data = {**form, "username": user, "password": password}
    async with http.post(base + SSO, data=data) as response:
        await response.read()
        return response.status


@pytest.mark.timeout(60)
async def test_thirty_wrong_passwords_from_one_address_leave_the_admin_in_from_another(
    pg_dsn: str,
) -> None:
    async with engine(pg_dsn) as e, client("127.0.0.2") as guesser, client("127.0.0.3") as admin:
        statuses = [await sign_in(guesser, e.base, "alice", f"guess{i}") for i in range(30)]
        assert statuses[:5] == [400] * 5 and set(statuses[5:]) == {429}
        started = time.monotonic()
        assert await sign_in(admin, e.base, "alice", PASSWORDS["alice"]) == 200
        assert time.monotonic() - started < REAL_SIGN_IN_WITHIN


@pytest.mark.timeout(120)
async def test_a_spray_from_twenty_addresses_keeps_a_real_sign_in_under_two_seconds(
    pg_dsn: str,
) -> None:
    async with engine(pg_dsn) as e, contextlib.AsyncExitStack() as stack:
        sprayers = [
            await stack.enter_async_context(client(f"127.0.0.{2 + i}"))
            for i in range(SPRAY_ADDRESSES)
        ]
        done: list[int] = []

        async def attempt(i: int) -> None:
            http = sprayers[i % SPRAY_ADDRESSES]
            done.append(await sign_in(http, e.base, f"user{i}", "wrong"))

        spray = [asyncio.create_task(attempt(i)) for i in range(SPRAY)]
        try:
            # Once the spray has failed a few times everywhere, the hashing slots are busy.
            while len(done) < SPRAY_ADDRESSES:
                await asyncio.wait(spray, return_when=asyncio.FIRST_COMPLETED, timeout=0.5)
            async with client("127.0.0.99") as real:
                started = time.monotonic()
                assert await sign_in(real, e.base, "alice", PASSWORDS["alice"]) == 200
                took = time.monotonic() - started
            print(f"real sign-in took {took:.2f} s with {SPRAY - len(done)} tries pending")
            assert took < REAL_SIGN_IN_WITHIN
            assert len(done) < SPRAY - 10, "the spray was over before the real sign-in"
            assert set(done) <= {400, 429}
        finally:
            for task in spray:
                task.cancel()
            await asyncio.gather(*spray, return_exceptions=True)


def test_a_free_slot_goes_to_the_address_failing_least_then_in_turns() -> None:
    order: FairOrder[str] = FairOrder(max_waiting=3)
    failures = {"a": 5, "b": 5, "c": 0}
    for waiter in ("a1", "a2", "a3"):
        order.wait("a", waiter)
    order.wait("b", "b1")
    order.wait("b", "b2")
    with pytest.raises(Full):
        order.wait("a", "a4")
    assert order.next(failures.__getitem__) == "a1"  # equal failures: the oldest first
    order.wait("c", "c1")  # a clean address arriving last
    assert order.next(failures.__getitem__) == "c1"
    # a and b take turns: b was not served yet, then a (served before b), ...
    assert [order.next(failures.__getitem__) for _ in range(4)] == ["b1", "a2", "b2", "a3"]
    assert order.next(failures.__getitem__) is None and not order


def test_a_cancelled_waiter_leaves_its_line() -> None:
    order: FairOrder[str] = FairOrder(max_waiting=2)
    order.wait("a", "a1")
    order.wait("a", "a2")
    order.cancel("a", "a1")
    assert order.waiting("a") == 1
    order.cancel("a", "a2")
    assert not order
