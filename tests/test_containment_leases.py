"""Issue 11: an engine whose lease connection goes silent loses its hosts within 30 s.

Two engine processes share a PostgreSQL; the first reaches it through a TCP
proxy that, at some point, stops forwarding anything while keeping every
connection open (no reset, no error: a network that silently drops packets).
PostgreSQL ends that engine's lease session once it has been silent for a few
balancing rounds, its advisory locks go with it, and the second engine takes
every host and names a hot-plug on the one it took over.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from .conftest import wait_until
from .fleet import engine_process, sim_hosts
from .pgproxy import PgProxy, proxied
from .rest import Rest
from .test_engine_scaleout import owned_hosts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
REFRESH = 1.0
TAKEOVER = 30.0


async def test_a_silent_lease_connection_hands_its_hosts_over_within_30s(
    pg_dsn: str, tmp_path: Path
) -> None:
    proxy = PgProxy(proxied(pg_dsn, 0)[0])
    await proxy.start()
    via_proxy = proxied(pg_dsn, proxy.port)[1]
    try:
        async with (
            sim_hosts(2) as hosts,
            engine_process(via_proxy, tmp_path / "a", REFRESH) as (_, base_a),
            engine_process(pg_dsn, tmp_path / "b", REFRESH) as (_, base_b),
            aiohttp.ClientSession(base_url=base_b) as http,
        ):
            rest = Rest(http)
            for i, host in enumerate(hosts):
                body = {"name": f"h{i}", "address": "127.0.0.1", "port": host.port}
                await rest.ok("POST", "/api/hosts", body, status=201)

            async def split() -> bool:
                a, b = await owned_hosts(base_a), await owned_hosts(base_b)
                return len(a) == 1 and len(b) == 1

            await wait_until(split, timeout=30, interval=0.2)
            orphan = (await owned_hosts(base_a)).pop()
            proxy.blackhole()
            loop = asyncio.get_running_loop()
            silenced = loop.time()
            await wait_until(lambda: _owns(base_b, 2), timeout=TAKEOVER + 5, interval=0.2)
            took = loop.time() - silenced
            print(f"the other engine took both hosts {took:.1f} s after the silence began")
            assert took < TAKEOVER
            # The silenced engine's session is gone from the server, locks and all.
            db = await asyncpg.connect(pg_dsn)
            try:
                sessions = await db.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    "diskname-engine",
                )
            finally:
                await db.close()
            assert sessions == 1
            host_id = next(
                h["id"] for h in (await rest.ok("GET", "/api/hosts"))["host"] if h["name"] == orphan
            )
            vm = (await rest.ok("POST", "/api/vms", {"name": "v", "host": {"id": host_id}}, 201))[
                "id"
            ]
            disk = await rest.hotplug(vm, "virtio")
            name, _ = await rest.wait_name(vm, disk, timeout=10)
            assert name == "/dev/vdb"
    finally:
        await proxy.close()


async def _owns(base: str, count: int) -> bool:
    try:
        return len(await owned_hosts(base)) == count
    except aiohttp.ClientError:
        return False
