"""Several engines on one PostgreSQL split the hosts; a dead engine's hosts move.

Two engines, two hosts with simulated guests. Each engine must monitor exactly
one host (advisory-lock leases), any engine answers for the whole fleet, and
after one engine is killed with SIGKILL the other names a hot-plug on the
orphaned host within two refresh intervals.
"""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp
import pytest

from diskname.engine import EngineConfig, EngineService

from .conftest import started, wait_until
from .fleet import engine_process, sim_hosts
from .rest import Rest

pytestmark = pytest.mark.timeout(120)
REFRESH = 1.0


async def owned_hosts(base: str) -> set[str]:
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        text = await resp.text()
    return {
        line.split('"')[1]
        for line in text.splitlines()
        if line.startswith("diskname_engine_host_owned{") and line.endswith(" 1")
    }


async def test_two_engines_split_hosts_and_take_over_after_sigkill(
    pg_dsn: str, tmp_path: Path
) -> None:
    engine_b = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=REFRESH))
    async with (
        sim_hosts(2) as hosts,
        engine_process(pg_dsn, tmp_path, REFRESH) as (proc_a, base_a),
        started(engine_b),
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{engine_b.http_port}") as http,
    ):
        rest = Rest(http)
        base_b = f"http://127.0.0.1:{engine_b.http_port}"
        for i, host in enumerate(hosts):
            body = {"name": f"h{i}", "address": "127.0.0.1", "port": host.port}
            await rest.ok("POST", "/api/hosts", body, status=201)

        async def split() -> bool:
            try:
                a, b = (
                    await owned_hosts(base_a),
                    await owned_hosts(base_b),
                )
            except aiohttp.ClientError:
                return False
            return len(a) == 1 and len(b) == 1 and a != b

        await wait_until(split, timeout=30, interval=0.1)
        orphan = (await owned_hosts(base_a)).pop()
        host_id = next(
            h["id"] for h in (await rest.ok("GET", "/api/hosts"))["host"] if h["name"] == orphan
        )
        vm = (
            await rest.ok("POST", "/api/vms", {"name": "vm", "host": {"id": host_id}}, status=201)
        )["id"]
        root = (await rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"][0]
        await rest.wait_name(vm, root["id"], timeout=10)  # named by engine A, read through B

        proc_a.send_signal(signal.SIGKILL)
        await proc_a.wait()
        disk = await rest.hotplug(vm, "virtio")
        name, waited = await rest.wait_name(vm, disk, timeout=2 * REFRESH)
        assert name == "/dev/vdb"
        print(f"hot-plug on the orphaned host named after {waited * 1000:.0f} ms")
        assert waited < 2 * REFRESH
        assert len(await owned_hosts(base_b)) == 2
