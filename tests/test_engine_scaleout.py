"""Several engines on one PostgreSQL split the hosts; a dead engine's hosts move.

Two engines, two hosts with simulated guests. Each engine must monitor exactly
one host (advisory-lock leases), any engine answers for the whole fleet, and
after one engine is killed with SIGKILL the other names a hot-plug on the
orphaned host within two refresh intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from diskname.agent.service import AgentConfig, AgentService
from diskname.bench.run import free_port
from diskname.engine import EngineConfig, EngineService
from diskname.host.service import HostConfig, HostService

from .conftest import started, wait_until
from .rest import Rest

pytestmark = pytest.mark.timeout(120)
REFRESH = 1.0


async def sim_guest(vm_id: str, channel: Path, hw: Path) -> None:
    cfg = AgentConfig(connect=f"unix:{channel}", source="sim", sim_hw=f"unix:{hw}", name_delay=0.05)
    await AgentService(cfg).run()


@contextlib.asynccontextmanager
async def two_hosts() -> AsyncIterator[list[HostService]]:
    root = Path(tempfile.mkdtemp(prefix="dn"))
    hosts = [
        HostService(
            HostConfig(
                listen_port=0,
                state_dir=root / f"s{i}",
                channels_dir=root / f"c{i}",
                channel_mode="listen",
            ),
            guest_launcher=sim_guest,
        )
        for i in range(2)
    ]
    try:
        async with started(hosts[0]), started(hosts[1]):
            yield hosts
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def owned_hosts(base: str) -> set[str]:
    async with aiohttp.ClientSession() as http, http.get(base + "/metrics") as resp:
        text = await resp.text()
    return {
        line.split('"')[1]
        for line in text.splitlines()
        if line.startswith("diskname_engine_host_owned{") and line.endswith(" 1")
    }


@contextlib.asynccontextmanager
async def engine_process(
    dsn: str, port: int, state: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "diskname",
        "engine",
        "--dsn",
        dsn,
        "--http",
        f"127.0.0.1:{port}",
        "--refresh-interval",
        str(REFRESH),
        "--state-dir",
        str(state),
        "--log-level",
        "WARNING",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_two_engines_split_hosts_and_take_over_after_sigkill(
    pg_dsn: str, tmp_path: Path
) -> None:
    port_a = free_port()
    base_a = f"http://127.0.0.1:{port_a}"
    engine_b = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=REFRESH))
    async with (
        two_hosts() as hosts,
        engine_process(pg_dsn, port_a, tmp_path) as proc_a,
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
