"""Acceptance 1 of issue 5: a quiet fleet costs no full fetches and no writes.

100 VMs on 4 real hosts (HostService in listen mode, in-process simulated
guests running the real agent code), one engine. Once every root disk is
named, nothing changes; over a quiet window of at least 15 polls per host
``/metrics`` must show zero ``Host.getVMFullList`` calls and zero database
writes.

The issue asks for 30 s at the default 3 s refresh interval: that is 10 poll
cycles per host. What matters is the number of cycles, not the wall time, so
the test refreshes every 0.2 s and watches 15 cycles (3 s); the 30 s run at
3 s is the benchmark's ``steady`` figure (``python -m diskname bench --hosts 4
--vms-per-host 25 --refresh-interval 3 --quiet-seconds 30``).
"""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg
import pytest

from diskname.engine import EngineConfig, EngineService

from .conftest import started, wait_until
from .fleet import sim_hosts
from .rest import Rest

pytestmark = pytest.mark.timeout(120)
HOSTS, VMS_PER_HOST = 4, 25
REFRESH = 0.2
QUIET_POLLS_PER_HOST = 15


def counters(text: str) -> dict[str, float]:
    """The unlabelled samples of a Prometheus text page."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.split()
            values[name] = float(value)
    return values


async def scrape(http: aiohttp.ClientSession) -> dict[str, float]:
    async with http.get("/metrics") as resp:
        assert resp.status == 200
        return counters(await resp.text())


async def test_a_quiet_fleet_of_100_vms_costs_no_fetches_and_no_writes(pg_dsn: str) -> None:
    engine = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=REFRESH))
    async with (
        sim_hosts(HOSTS, name_delay=0.0) as fleet,
        started(engine),
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{engine.http_port}") as http,
    ):
        rest = Rest(http)
        for i, host in enumerate(fleet):
            body = {"name": f"h{i}", "address": "127.0.0.1", "port": host.port}
            host_id = (await rest.ok("POST", "/api/hosts", body, status=201))["id"]
            await asyncio.gather(
                *(
                    rest.ok(
                        "POST", "/api/vms", {"name": f"h{i}-vm{n}", "host": {"id": host_id}}, 201
                    )
                    for n in range(VMS_PER_HOST)
                )
            )

        db = await asyncpg.connect(pg_dsn)
        try:

            async def settled() -> bool:
                row = await db.fetchrow(
                    """SELECT count(*) FILTER (WHERE d.logical_name IS NOT NULL) AS named,
                              count(DISTINCT v.id) FILTER (WHERE v.hash IS NOT NULL) AS hashed
                       FROM vms v JOIN vm_device d ON d.vm_id = v.id"""
                )
                return bool(row["named"] == row["hashed"] == HOSTS * VMS_PER_HOST)

            await wait_until(settled, timeout=60, interval=0.1)
            before = await scrape(http)
            history = await db.fetchval("SELECT count(*) FROM logical_name_history")

            async def quiet_window_over() -> bool:
                polls = (await scrape(http))["diskname_engine_polls_total"]
                return polls >= before["diskname_engine_polls_total"] + window_polls

            window_polls = HOSTS * QUIET_POLLS_PER_HOST
            start = asyncio.get_running_loop().time()
            await wait_until(quiet_window_over, timeout=30, interval=REFRESH)
            took = asyncio.get_running_loop().time() - start
            after = await scrape(http)
            assert await db.fetchval("SELECT count(*) FROM logical_name_history") == history
        finally:
            await db.close()

    delta = {name: after[name] - before[name] for name in before if name.endswith("_total")}
    print(f"quiet window of {took:.1f} s: {delta}")
    assert delta["diskname_engine_polls_total"] >= window_polls
    assert delta["diskname_engine_full_list_calls_total"] == 0
    assert delta["diskname_engine_db_writes_total"] == 0
    assert history == HOSTS * VMS_PER_HOST  # one row per root disk, none doubled
