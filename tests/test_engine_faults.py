"""Acceptance 2 of issue 5: the engine survives its database and its own death.

* PostgreSQL goes away under load (every connection cut, new ones refused, as
  when it is stopped) and comes back: the engine keeps running, ``/healthz``
  answers 503 meanwhile, and afterwards it converges with nothing lost, the
  changes made during the outage included.
* The engine process is killed with SIGKILL while names are being written and
  started again: it converges, and no history row is lost or doubled.

The outage is made the way asyncpg's own tests make theirs: a TCP proxy
between the engine and PostgreSQL (whose embedded server listens on a UNIX
socket only) that can be cut and restored, so it runs on any machine.

The fleet changes through the hosts' own JSON-RPC (``VM.hotplugDisk``), as
another tool or a guest would change it: that keeps working while the
engine's database, or the engine itself, is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from diskname.engine import EngineConfig, EngineService
from diskname.host.service import HostService
from diskname.streams import JsonRpcClient

from .conftest import started, wait_until
from .fleet import engine_process, sim_hosts
from .pgproxy import PgProxy, proxied
from .rest import Rest

pytestmark = pytest.mark.timeout(120)
REFRESH = 0.2


class Fleet:
    """The hosts' JSON-RPC, the expected names, and checks against the engine's rows."""

    def __init__(self, services: list[HostService], rest: Rest) -> None:
        self.services, self.rest = services, rest
        self.clients: list[JsonRpcClient] = []
        self.vms: list[tuple[JsonRpcClient, str]] = []

    async def register(self, vms_per_host: int) -> None:
        for i, host in enumerate(self.services):
            body = {"name": f"h{i}", "address": "127.0.0.1", "port": host.port}
            host_id = (await self.rest.ok("POST", "/api/hosts", body, status=201))["id"]
            client = await JsonRpcClient.connect("127.0.0.1", host.port)
            self.clients.append(client)
            for n in range(vms_per_host):
                vm = {"name": f"h{i}-vm{n}", "host": {"id": host_id}}
                created = await self.rest.ok("POST", "/api/vms", vm, status=201)
                self.vms.append((client, created["id"]))

    async def close(self) -> None:
        for client in self.clients:
            await client.close()

    async def hotplug(self, index: int, *, named: bool = True) -> None:
        """Plug a new disk into VM ``index`` behind the engine's back; wait for the guest."""
        client, vm_id = self.vms[index % len(self.vms)]
        disk = str(uuid.uuid4())
        drive = {"diskId": disk, "iface": "virtio"}
        await client.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
        if named:
            await wait_until(lambda: self._guest_named(client, vm_id, disk), timeout=10)

    async def _guest_named(self, client: JsonRpcClient, vm_id: str, disk: str) -> bool:
        return disk in (await self.expected_vm(client, vm_id))

    @staticmethod
    async def expected_vm(client: JsonRpcClient, vm_id: str) -> dict[str, str]:
        """disk id -> the name the host's guest gives it, for every plugged disk."""
        [vm] = await client.call("Host.getVMFullList", {"vmList": [vm_id]})
        names = {k.strip(): v.get("name") for k, v in vm["guestDiskMapping"].items()}
        return {
            d["diskId"]: names[d["serial"]]
            for d in vm["devices"]
            if d.get("plugged", True) and d["serial"] in names
        }

    async def expected(self) -> dict[tuple[str, str], str]:
        found = {}
        for client, vm_id in self.vms:
            for disk, name in (await self.expected_vm(client, vm_id)).items():
                found[(vm_id, disk)] = name
        return found


async def stored_names(db: Any) -> dict[tuple[str, str], str]:
    rows = await db.fetch(
        "SELECT vm_id::text, disk_id::text, logical_name FROM vm_device WHERE is_plugged"
    )
    return {(r["vm_id"], r["disk_id"]): r["logical_name"] for r in rows}


async def history(db: Any) -> dict[tuple[str, str], list[tuple[str | None, str | None]]]:
    rows = await db.fetch(
        """SELECT vm_id::text, disk_id::text, old_name, new_name
           FROM logical_name_history ORDER BY id"""
    )
    found: dict[tuple[str, str], list[tuple[str | None, str | None]]] = {}
    for r in rows:
        found.setdefault((r["vm_id"], r["disk_id"]), []).append((r["old_name"], r["new_name"]))
    return found


async def converged(fleet: Fleet, db: Any) -> bool:
    return await stored_names(db) == await fleet.expected()


async def assert_exact_history(fleet: Fleet, db: Any) -> int:
    """Every disk's history is exactly its one naming: nothing lost, nothing doubled."""
    expected = await fleet.expected()
    assert await history(db) == {key: [(None, name)] for key, name in expected.items()}
    return len(expected)


async def status(http: aiohttp.ClientSession, path: str) -> int:
    try:
        async with http.get(path) as resp:
            return resp.status
    except aiohttp.ClientError:
        return 0


@contextlib.asynccontextmanager
async def fleet_of(
    services: list[HostService], base: str, vms_per_host: int
) -> AsyncIterator[tuple[Fleet, aiohttp.ClientSession]]:
    async with aiohttp.ClientSession(base_url=base) as http:
        fleet = Fleet(services, Rest(http))
        try:
            await fleet.register(vms_per_host)
            yield fleet, http
        finally:
            await fleet.close()


async def test_postgresql_outage_under_load(pg_dsn: str) -> None:
    proxy = PgProxy(proxied(pg_dsn, 0)[0])
    await proxy.start()
    dsn = proxied(pg_dsn, proxy.port)[1]
    engine = EngineService(EngineConfig(dsn=dsn, http_port=0, refresh_interval=REFRESH))
    db = await asyncpg.connect(pg_dsn)  # the test's own view, not through the proxy
    try:
        async with (
            sim_hosts(2, name_delay=0.0) as services,
            started(engine),
            fleet_of(services, f"http://127.0.0.1:{engine.http_port}", 5) as (fleet, http),
        ):
            await wait_until(lambda: converged(fleet, db), timeout=20, interval=0.05)
            reads = asyncio.create_task(_keep_reading(http))

            # Under load: plugs in flight when the database goes.
            plugs = [asyncio.create_task(fleet.hotplug(i, named=False)) for i in range(10)]
            await proxy.cut()
            await asyncio.gather(*plugs)
            await wait_until(lambda: _is(http, "/healthz", 503), timeout=10)
            answer = await fleet.rest.call(
                "POST", f"/api/vms/{fleet.vms[0][1]}/diskattachments", {"interface": "virtio"}
            )
            assert answer[0] == 503 and answer[1]["error"]["code"] == 503, answer
            # Changes while it is away: the hosts notify, the engine cannot store.
            for i in range(10):
                await fleet.hotplug(i)
            assert await status(http, "/metrics") == 200  # still running and serving
            assert not await converged(fleet, db)

            loop = asyncio.get_running_loop()
            back = loop.time()
            await proxy.start()
            await wait_until(lambda: _is(http, "/healthz", 200), timeout=10)
            healthy = loop.time() - back
            await wait_until(lambda: converged(fleet, db), timeout=20, interval=0.02)
            recovered = loop.time() - back
            for i in range(10):  # and it goes on working
                await fleet.hotplug(i)
            await wait_until(lambda: converged(fleet, db), timeout=10, interval=0.02)
            reads.cancel()
            await asyncio.gather(reads, return_exceptions=True)
            disks = await assert_exact_history(fleet, db)
            assert disks == 10 + 30
            print(
                f"after the outage: healthy in {healthy * 1000:.0f} ms,"
                f" converged in {recovered * 1000:.0f} ms"
            )
    finally:
        await db.close()
        await proxy.close()


async def _keep_reading(http: aiohttp.ClientSession) -> None:
    """Load on the API throughout: list VMs and their disks, again and again."""
    while True:
        for path in ("/api/vms", "/api/hosts", "/metrics"):
            await status(http, path)


async def _is(http: aiohttp.ClientSession, path: str, code: int) -> bool:
    return await status(http, path) == code


async def test_engine_killed_while_writing_converges_without_lost_or_doubled_history(
    pg_dsn: str, tmp_path: Path
) -> None:
    db = await asyncpg.connect(pg_dsn)
    plugs = 60
    try:
        async with (
            sim_hosts(2, name_delay=0.0) as services,
            engine_process(pg_dsn, tmp_path, REFRESH) as (first, base),
        ):
            await wait_until(lambda: _up(base), timeout=30, interval=0.05)
            async with fleet_of(services, base, 10) as (fleet, _):
                await wait_until(lambda: converged(fleet, db), timeout=20, interval=0.05)
                roots = await db.fetchval("SELECT count(*) FROM logical_name_history")
                # A steady stream of changes, one plug after another, while it dies.
                load = asyncio.create_task(_plug_all(fleet, plugs))
                await wait_until(
                    lambda: _history_rows(db, roots + plugs // 4), timeout=20, interval=0.005
                )
                first.send_signal(signal.SIGKILL)
                await first.wait()
                at_kill = await db.fetchval("SELECT count(*) FROM logical_name_history")
                assert at_kill < roots + plugs, "the kill came after the last write"
                restarted = asyncio.get_running_loop().time()
                async with engine_process(pg_dsn, tmp_path, REFRESH) as (_, again):
                    await wait_until(lambda: _up(again), timeout=30, interval=0.05)
                    await load
                    await wait_until(lambda: converged(fleet, db), timeout=30, interval=0.05)
                    took = asyncio.get_running_loop().time() - restarted
                    disks = await assert_exact_history(fleet, db)
        assert disks == roots + plugs
        print(
            f"killed with {at_kill - roots} of {plugs} names written;"
            f" converged {took:.2f} s after the restart began (process start included)"
        )
    finally:
        await db.close()


async def _plug_all(fleet: Fleet, count: int) -> None:
    for i in range(count):
        await fleet.hotplug(i)


async def _history_rows(db: Any, at_least: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM logical_name_history") >= at_least)


async def _up(base: str) -> bool:
    async with aiohttp.ClientSession() as http:
        return await status(http, base + "/healthz") == 200
