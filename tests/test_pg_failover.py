"""PostgreSQL failover under a running engine (SPEC §19, issue 23 acceptance 5).

A real primary with a synchronous streaming standby (``tests/pgpair.py``), an
engine given both in one DSN with ``target_session_attrs=read-write``, and a
client registering hosts one after another. Mid-stream the primary is killed
with SIGKILL and the standby promoted: writes resume within 30 s, and every
host whose registration was acknowledged (201) is there afterwards.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from diskname.engine import EngineConfig, EngineService

from . import pgpair
from .conftest import started

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not pgpair.available(), reason="Debian's PostgreSQL is not installed"),
]
RESUME_WITHIN = 30.0
BEFORE, AFTER = 20, 10


async def test_writes_resume_on_the_promoted_standby_and_nothing_acknowledged_is_lost() -> None:
    with pgpair.pg_pair() as pair:
        config = EngineConfig(dsn=pair.dsn(), http_port=0, refresh_interval=1.0)
        engine = EngineService(config)
        async with started(engine), aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{engine.http_port}"
            acknowledged: list[str] = []
            failed = 0

            async def register(i: int) -> bool:
                body = {"name": f"h{i}", "address": "127.0.0.1", "port": 9}
                timeout = aiohttp.ClientTimeout(total=15)
                try:
                    async with http.post(base + "/api/hosts", json=body, timeout=timeout) as r:
                        await r.read()
                        assert r.status < 500 or r.status == 503, (r.status, await r.text())
                        if r.status == 201:
                            acknowledged.append(body["name"])
                        return r.status == 201
                except (aiohttp.ClientError, TimeoutError):
                    return False

            i = 0
            while len(acknowledged) < BEFORE:
                assert await register(i)
                i += 1
            pair.kill_primary()
            killed = time.monotonic()
            pair.promote()
            while not await register(i):
                i += 1
                failed += 1
                assert time.monotonic() - killed < RESUME_WITHIN, "writes did not resume"
                await asyncio.sleep(0.05)  # sync-ok: a client retrying, with a deadline
            resumed = time.monotonic() - killed
            i += 1
            for _ in range(AFTER):
                assert await register(i)
                i += 1
            async with http.get(base + "/api/hosts") as r:
                names = {h["name"] for h in (await r.json())["host"]}
        print(f"writes resumed {resumed:.2f} s after kill -9 ({failed} refused meanwhile)")
        assert set(acknowledged) <= names
        assert len(acknowledged) == BEFORE + 1 + AFTER
        assert resumed < RESUME_WITHIN
