"""Issue 4, acceptance 2: a host restarted under a running engine costs no full fetch.

A real EngineService (real PostgreSQL) monitors a real HostService. Two VMs,
one with a hot-plugged disk the guest named. The host stops and starts again
on the same port and state directory: it reports the same VMs and hashes, the
engine reconnects and keeps polling, and its ``full_list_calls`` stays put.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from diskname.bench.run import free_port
from diskname.engine import EngineConfig, EngineService
from diskname.host.channels import channel_path
from diskname.host.service import HostConfig, HostService
from diskname.protocol import agent_wire as aw
from diskname.streams import JsonRpcClient, close_writer

from .conftest import started, wait_until


class Rest:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def __call__(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self.http.request(method, self.base + path, data=data, headers=headers) as resp:
            assert resp.status < 300, (resp.status, await resp.text())
            return orjson.loads(await resp.read())


@contextlib.asynccontextmanager
async def rest_of(engine: EngineService) -> AsyncIterator[Rest]:
    async with aiohttp.ClientSession() as http:
        yield Rest(http, f"http://127.0.0.1:{engine.http_port}")


def host_config(root: Path, port: int) -> HostConfig:
    return HostConfig(
        listen_port=port,
        state_dir=root / "state",
        channels_dir=root / "ch",
        channel_mode="listen",
        host_id="restart-host",
    )


async def host_view(port: int) -> tuple[list[Any], list[Any]]:
    async with await JsonRpcClient.connect("127.0.0.1", port) as c:
        stats = await c.call("Host.getAllVmStats")
        full = await c.call("Host.getVMFullList")
    # The guest agent's part says when its sources came or went: a restart starts it anew.
    stats = [{k: v for k, v in vm.items() if k != "agent"} for vm in stats]
    full = [{k: v for k, v in vm.items() if k != "agent"} for vm in full]
    return sorted(stats, key=lambda v: v["vmId"]), sorted(full, key=lambda v: v["vmId"])


async def name_disk(channels: Path, vm_id: str, serial: str, name: str) -> None:
    """Play the VM's agent for one report."""
    path = channel_path(channels, vm_id)
    await wait_until(path.exists)
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        await reader.readline()  # the host's refresh
        mapping = {serial: aw.DiskEntry(name=name)}
        writer.write(aw.encode_message(aw.DisksUsage(mapping=mapping)))
        await writer.drain()
    finally:
        await close_writer(writer)


async def test_a_restarted_host_causes_no_full_fetch(pg_dsn: str, short_dir: Path) -> None:
    port = free_port()
    engine = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=0.2))
    async with started(engine), rest_of(engine) as rest:
        host = HostService(host_config(short_dir, port))
        async with started(host):
            h = await rest(
                "POST", "/api/hosts", {"name": "h", "address": "127.0.0.1", "port": port}
            )
            vms = [
                (await rest("POST", "/api/vms", {"name": n, "host": {"id": h["id"]}}))["id"]
                for n in ("web", "db")
            ]
            att = await rest(
                "POST", f"/api/vms/{vms[0]}/diskattachments", {"interface": "virtio_scsi"}
            )
            disk_id = att["disk"]["id"]
            await name_disk(host.config.channels_dir, vms[0], disk_id[:20], "/dev/sdb")

            async def named() -> bool:
                got = await rest("GET", f"/api/vms/{vms[0]}/diskattachments/{disk_id}")
                return bool(got["logical_name"] == "/dev/sdb")

            await wait_until(named, timeout=15)
            before = await host_view(port)
            fetches = engine.metrics.full_list_calls
            assert fetches > 0

        async def host_status() -> str:
            return str((await rest("GET", f"/api/hosts/{h['id']}"))["status"])

        await wait_until(lambda: _is(host_status, "up", negate=True), timeout=15)
        host = HostService(host_config(short_dir, port))
        async with started(host):
            await wait_until(lambda: _is(host_status, "up"), timeout=15)
            polls = engine.metrics.polls
            await wait_until(lambda: engine.metrics.polls >= polls + 5, timeout=15)
            after = await host_view(port)
            # The agent comes back and says the same again: still no fetch.
            await name_disk(host.config.channels_dir, vms[0], disk_id[:20], "/dev/sdb")
            polls = engine.metrics.polls
            await wait_until(lambda: engine.metrics.polls >= polls + 3, timeout=15)
            assert await named()
        assert after == before
        assert {v["vmId"] for v in after[0]} == set(vms)
        assert engine.metrics.full_list_calls == fetches


async def _is(status: Any, wanted: str, negate: bool = False) -> bool:
    return (await status() == wanted) != negate
