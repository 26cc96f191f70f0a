"""Waiting for a name at scale (a benchmark, not a test): ``python -m tests.bench_waiters``.

SPEC §18: 10,000 requests parked on ``?wait=logical_name`` cost one engine less than
200 MiB and no database query while they wait, and a waiter answers within 50 ms
of the name being stored. Everything is real: an engine process
(``python -m diskname engine``) on an embedded PostgreSQL (or ``--dsn``), a stand-in
host (tests/engine_fakehost.py) whose guest names disks when told, and real client
connections, spread over 127.0.0.2... so that none passes the engine's per-address
cap (256, SPEC §19).

- memory: the engine's resident set (VmRSS) with every waiter parked, less before;
- queries: whether any of the engine's pool connections began a query while they
  were parked (``pg_stat_activity.query_start``; the lease connection, which
  balances hosts every half refresh interval, is left out and rests meanwhile);
- latency: for a plug named by the guest, the waiter's answer against the event
  stream's (the name stored), and against a client polling every 100 ms.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson

from diskname.pgembed import EmbeddedPostgres

from .engine_fakehost import FakeHost
from .fleet import engine_process

PER_ADDRESS = 250  # under the engine's per-address cap of 256
POLL = 0.1


@contextlib.asynccontextmanager
async def database(dsn: str | None) -> AsyncIterator[str]:
    if dsn is not None:
        yield dsn
        return
    with tempfile.TemporaryDirectory(prefix="dnbw") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            yield await pg.start()
        finally:
            await pg.stop()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Bench:
    def __init__(self, base: str, fake: FakeHost, sessions: list[aiohttp.ClientSession]) -> None:
        self.base, self.fake, self.sessions = base, fake, sessions
        self.http = sessions[0]

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        headers = {"Content-Type": "application/json"} if data else {}
        async with self.http.request(method, self.base + path, data=data, headers=headers) as r:
            payload = await r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {payload[:200]!r}")
            return orjson.loads(payload) if r.content_type == "application/json" else payload

    async def parked(self) -> int:
        text = (await self.call("GET", "/metrics")).decode()
        line = next(x for x in text.splitlines() if x.startswith("diskname_engine_name_waiters "))
        return int(float(line.split()[1]))

    async def setup(self, disks: int) -> tuple[str, list[str]]:
        body = {"name": "h1", "address": "127.0.0.1", "port": self.fake.port}
        host = await self.call("POST", "/api/hosts", body)
        await until(lambda: self._up(host["id"]), 30)
        vm = await self.call("POST", "/api/vms", {"name": "vm1", "host": {"id": host["id"]}})
        plugged = [
            await self.call(
                "POST",
                f"/api/vms/{vm['id']}/diskattachments",
                {"interface": "virtio", "active": True},
            )
            for _ in range(disks)
        ]
        return vm["id"], [a["id"] for a in plugged]

    async def _up(self, host_id: str) -> bool:
        return bool((await self.call("GET", f"/api/hosts/{host_id}"))["status"] == "up")

    def name(self, vm: str, disks: list[str], first: int = 0) -> None:
        mapping = dict(self.fake.vms[vm].mapping)
        for i, disk in enumerate(disks):
            mapping[disk[:20]] = {"name": f"/dev/vd{first + i}"}
        self.fake.set_mapping(vm, mapping)

    async def wait(self, session: aiohttp.ClientSession, vm: str, disk: str) -> float:
        path = f"{self.base}/api/vms/{vm}/diskattachments/{disk}?wait=logical_name&timeout=300"
        async with session.get(path) as resp:
            att = await resp.json()
            assert resp.status == 200 and att["logical_name"], att
        return time.monotonic()

    async def poll(self, vm: str, disk: str) -> float:
        path = f"/api/vms/{vm}/diskattachments/{disk}"
        while True:  # the polling client waiting is measured against
            if (await self.call("GET", path))["logical_name"]:
                return time.monotonic()
            await asyncio.sleep(POLL)  # sync-ok: polling is what is measured

    async def event(self, disk: str, ready: asyncio.Event) -> float:
        async with self.http.get(self.base + "/api/events") as resp:
            ready.set()
            async for line in resp.content:
                if line.startswith(b"data: "):
                    event = orjson.loads(line[6:])
                    if event["disk_id"] == disk and event["new"]:
                        return time.monotonic()
        raise RuntimeError("the event stream ended")


async def until(probe: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise RuntimeError("condition not met in time")
        await asyncio.sleep(0.05)  # sync-ok: polling with a deadline


async def backends(conn: Any) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT pid, query_start FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND application_name <> 'diskname-engine'"
        " AND backend_type = 'client backend' ORDER BY pid"
    )
    return [tuple(r) for r in rows]


async def parked_phase(b: Bench, pid: int, dsn: str, vm: str, disks: list[str], n: int) -> Any:
    before = rss_mib(pid)
    tasks = [
        asyncio.create_task(b.wait(b.sessions[i // PER_ADDRESS], vm, disks[i % len(disks)]))
        for i in range(n)
    ]
    started = time.monotonic()
    await until(lambda: _at_least(b, n), 300)
    parked_in = time.monotonic() - started
    after = rss_mib(pid)
    admin = await asyncpg.connect(dsn)
    try:
        first = await backends(admin)
        await asyncio.sleep(3.0)  # sync-ok: the window observed
        later = await backends(admin)
        queries_while_parked = sum(row not in first for row in later)
    finally:
        await admin.close()
    named = time.monotonic()
    b.name(vm, disks)
    answered = await asyncio.gather(*tasks)
    return {
        "waiters": n,
        "attachments": len(disks),
        "parked_in_s": round(parked_in, 2),
        "engine_rss_before_mib": round(before, 1),
        "engine_rss_parked_mib": round(after, 1),
        "engine_rss_growth_mib": round(after - before, 1),
        "kib_per_waiter": round((after - before) * 1024 / n, 2),
        "pool_connections_that_queried_while_parked": queries_while_parked,
        "all_answered_after_naming_s": round(max(answered) - named, 3),
    }


async def _at_least(b: Bench, n: int) -> bool:
    return await b.parked() >= n


async def latency_phase(b: Bench, vm: str, rounds: int) -> Any:
    waited, polled = [], []
    for i in range(rounds):
        att = await b.call(
            "POST", f"/api/vms/{vm}/diskattachments", {"interface": "virtio", "active": True}
        )
        ready = asyncio.Event()
        event = asyncio.create_task(b.event(att["id"], ready))
        await ready.wait()
        waiter = asyncio.create_task(b.wait(b.http, vm, att["id"]))
        poller = asyncio.create_task(b.poll(vm, att["id"]))
        await until(lambda: _at_least(b, 1), 10)
        await asyncio.sleep(POLL * (i % 7) / 7)  # sync-ok: spread the poller's phase
        b.name(vm, [att["id"]], first=1000 + i)
        stored = await event
        waited.append((await waiter - stored) * 1000)
        polled.append((await poller - stored) * 1000)
    return {
        "rounds": rounds,
        "wait_after_event_ms": _summary(waited),
        f"poll_every_{int(POLL * 1000)}ms_after_event_ms": _summary(polled),
    }


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "p90": round(ordered[int(len(ordered) * 0.9) - 1], 1),
        "max": round(ordered[-1], 1),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the engine inherits it
    fake = FakeHost()
    await fake.start()
    addresses = (args.waiters + PER_ADDRESS - 1) // PER_ADDRESS
    with tempfile.TemporaryDirectory(prefix="dnbw") as state:
        async with contextlib.AsyncExitStack() as stack:
            dsn = await stack.enter_async_context(database(args.dsn))
            proc, base = await stack.enter_async_context(engine_process(dsn, Path(state), 60.0))
            sessions = []
            for i in range(addresses):
                connector = aiohttp.TCPConnector(limit=0, local_addr=(f"127.0.0.{2 + i}", 0))
                timeout = aiohttp.ClientTimeout(total=600)
                session = aiohttp.ClientSession(connector=connector, timeout=timeout)
                sessions.append(await stack.enter_async_context(session))
            b = Bench(base, fake, sessions)
            vm, disks = await b.setup(args.attachments)
            for disk in disks:  # warm: every code path the waiters take has run once
                await b.call("GET", f"/api/vms/{vm}/diskattachments/{disk}")
            report = {
                "nofile": hard,
                "parked": await parked_phase(b, proc.pid, dsn, vm, disks, args.waiters),
                "latency": await latency_phase(b, vm, args.rounds),
            }
    await fake.close()
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiters", type=int, default=10_000)
    parser.add_argument("--attachments", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--dsn", help="PostgreSQL to use (default: an embedded one)")
    result = asyncio.run(main(parser.parse_args()))
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
