"""``GET .../diskattachments/{disk}?wait=logical_name`` (SPEC §18) against a real engine:
EngineService on port 0, a fake host whose guest names disks when the test says, real
PostgreSQL, real connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from diskname.engine import EngineConfig, EngineService

from .conftest import started, wait_until
from .engine_fakehost import FakeHost

pytestmark = pytest.mark.timeout(90)
ATTS = "/api/vms/{vm}/diskattachments"


class Engine:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data else {}
        async with self.http.request(method, self.base + path, data=data, headers=headers) as r:
            payload = await r.read()
            assert r.status == status, (r.status, payload)
            return orjson.loads(payload) if r.content_type == "application/json" else payload

    async def gauge(self, name: str) -> float:
        text = (await self.call("GET", "/metrics")).decode()
        line = next(x for x in text.splitlines() if x.startswith(name + " "))
        return float(line.split()[1])

    async def owns(self, host: str) -> bool:
        text = (await self.call("GET", "/metrics")).decode()
        return f'diskname_engine_host_owned{{host="{host}"}} 1' in text


@contextlib.asynccontextmanager
async def engines(dsn: str, count: int = 1, **config: Any) -> AsyncIterator[list[Engine]]:
    config = {"refresh_interval": 30.0, "max_connections_per_address": 2000, **config}
    services = [EngineService(EngineConfig(dsn=dsn, http_port=0, **config)) for _ in range(count)]
    async with contextlib.AsyncExitStack() as stack:
        for service in services:
            await stack.enter_async_context(started(service))
        connector = aiohttp.TCPConnector(limit=0)
        http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
        yield [Engine(http, f"http://127.0.0.1:{s.http_port}") for s in services]


@contextlib.asynccontextmanager
async def cluster(dsn: str, count: int = 1) -> AsyncIterator[tuple[list[Engine], FakeHost, str]]:
    """Engines, a fake host whose guest names nothing by itself, and a VM on it."""
    fake = FakeHost(auto_guest=False)
    await fake.start()
    try:
        async with engines(dsn, count) as found:
            body = {"name": "h1", "address": "127.0.0.1", "port": fake.port}
            host = await found[0].call("POST", "/api/hosts", body, 201)

            async def up() -> bool:
                return bool(
                    (await found[0].call("GET", f"/api/hosts/{host['id']}"))["status"] == "up"
                )

            await wait_until(up, timeout=15)
            vm = await found[0].call(
                "POST", "/api/vms", {"name": "vm1", "host": {"id": host["id"]}}, 201
            )
            yield found, fake, vm["id"]
    finally:
        await fake.close()


async def plug(engine: Engine, vm: str) -> str:
    att = await engine.call(
        "POST", ATTS.format(vm=vm), {"interface": "virtio", "active": True}, 201
    )
    assert att["logical_name"] is None
    return str(att["id"])


def name(fake: FakeHost, vm: str, disks: dict[str, str]) -> None:
    """The guest names these disks (disk id -> name), all in one report."""
    mapping = dict(fake.vms[vm].mapping)
    mapping.update({disk[:20]: {"name": dev} for disk, dev in disks.items()})
    fake.set_mapping(vm, mapping)


async def waiting(engine: Engine, vm: str, disk: str, timeout: float = 20) -> tuple[Any, float]:
    path = f"{ATTS.format(vm=vm)}/{disk}?wait=logical_name&timeout={timeout:g}"
    answer = await engine.call("GET", path)
    return answer, time.monotonic()


async def next_event(engine: Engine, disk: str, ready: asyncio.Event) -> float:
    """When ``/api/events`` brings the naming of ``disk`` (``ready``: subscribed)."""
    async with engine.http.get(engine.base + "/api/events") as resp:
        ready.set()  # the engine subscribes before it answers
        async for line in resp.content:
            if line.startswith(b"data: "):
                event = orjson.loads(line[6:])
                if event["disk_id"] == disk and event["new"]:
                    return time.monotonic()
    raise AssertionError("the stream ended")


async def parked(engine: Engine, count: int) -> None:
    async def enough() -> bool:
        return await engine.gauge("diskname_engine_name_waiters") >= count

    await wait_until(enough, timeout=30)


async def test_a_waiter_answers_with_the_name_as_the_event_stream_does(pg_dsn: str) -> None:
    async with cluster(pg_dsn) as ([engine], fake, vm):
        disk = await plug(engine, vm)
        subscribed = asyncio.Event()
        waiter = asyncio.create_task(waiting(engine, vm, disk))
        event = asyncio.create_task(next_event(engine, disk, subscribed))
        await parked(engine, 1)
        await subscribed.wait()
        name(fake, vm, {disk: "/dev/vdb"})
        (att, answered), heard = await waiter, await event
        assert att["logical_name"] == "/dev/vdb"
        assert answered - heard < 0.05, answered - heard  # within 50 ms of the stored event

        # Named already: at once. The oVirt API takes the same query.
        att, _ = await waiting(engine, vm, disk)
        assert att["logical_name"] == "/dev/vdb"
        xml = await engine.call(
            "GET", f"/ovirt-engine/api/vms/{vm}/diskattachments/{disk}?wait=logical_name&timeout=5"
        )
        assert b"<logical_name>/dev/vdb</logical_name>" in xml


async def test_the_timeout_answers_the_attachment_as_it_is(pg_dsn: str) -> None:
    async with cluster(pg_dsn) as ([engine], _fake, vm):
        disk = await plug(engine, vm)
        started_at = time.monotonic()
        att, answered = await waiting(engine, vm, disk, timeout=0.3)
        assert att["logical_name"] is None and att["id"] == disk
        assert 0.3 <= answered - started_at < 2
        base = f"{ATTS.format(vm=vm)}/{disk}"
        for query in ("wait=active", "wait=logical_name&timeout=0", "timeout=301", "timeout=x"):
            answer = await engine.call("GET", f"{base}?{query}", status=400)
            assert answer["error"]["code"] == 400
        missing = "99999999-9999-9999-9999-999999999999"
        await engine.call("GET", f"{ATTS.format(vm=vm)}/{missing}?wait=logical_name", status=404)
        fault = await engine.call(
            "GET", f"/ovirt-engine/api/vms/{vm}/diskattachments/{disk}?wait=x", status=400
        )
        assert b"<fault>" in fault


async def backends_busy(admin: Any) -> list[Any]:
    """When each of the engine's pool connections last began a query."""
    rows = await admin.fetch(
        "SELECT pid, query_start, left(query, 120) FROM pg_stat_activity"
        " WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND application_name <> 'diskname-engine'"
        " AND backend_type = 'client backend' ORDER BY pid"
    )
    return [tuple(r) for r in rows]


# What an attachment read (db/rows.py: ATTACHMENTS) starts with, as pg_stat_activity shows it.
ATTACHMENT_READ = "vd.vm_id::text, vd.disk_id::text"


@pytest.mark.timeout(120)
async def test_500_waiters_cost_no_query_while_they_wait(pg_dsn: str) -> None:
    async with cluster(pg_dsn) as ([engine], fake, vm):
        disks = [await plug(engine, vm) for _ in range(10)]
        waiters = [
            asyncio.create_task(waiting(engine, vm, disks[i % len(disks)], timeout=60))
            for i in range(500)
        ]
        admin = await asyncpg.connect(pg_dsn)
        try:
            await parked(engine, 500)
            before = await backends_busy(admin)
            await asyncio.sleep(1.0)  # sync-ok: the window observed, not a synchronisation
            began = [q for q in await backends_busy(admin) if q not in before]
            # No attachment read began meanwhile (the engine's own background rounds may
            # run a statement of theirs: a balancing round, a write; a waiter never does).
            assert [q for q in began if ATTACHMENT_READ in q[2]] == [], began
            name(fake, vm, {d: f"/dev/vd{chr(ord('b') + i)}" for i, d in enumerate(disks)})
            answers = await asyncio.wait_for(asyncio.gather(*waiters), 30)
        finally:
            await admin.close()
            for task in waiters:
                task.cancel()
        assert all(att["logical_name"] for att, _ in answers)
        assert await engine.gauge("diskname_engine_name_waiters") == 0


async def test_a_name_stored_by_another_engine_wakes_the_waiter(pg_dsn: str) -> None:
    async with cluster(pg_dsn, count=2) as (both, fake, vm):
        await wait_until(lambda: _any_owner(both), timeout=15)
        owner = [e for e in both if await e.owns("h1")]
        other = next(e for e in both if e not in owner)
        disk = await plug(owner[0], vm)  # the other picks the host up only at its next round
        waiter = asyncio.create_task(waiting(other, vm, disk, timeout=20))
        await parked(other, 1)
        named_at = time.monotonic()
        name(fake, vm, {disk: "/dev/vdb"})
        att, answered = await waiter
        assert att["logical_name"] == "/dev/vdb"
        assert answered - named_at < 2  # through NOTIFY, not at the timeout


async def _any_owner(both: list[Engine]) -> bool:
    return any([await e.owns("h1") for e in both])
