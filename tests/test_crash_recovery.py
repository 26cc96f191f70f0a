"""Acceptance 4 of issue 23 (SPEC §19 "Crashes"): an engine killed in mid-plug converges.

The engine runs as a process held at a named step of a plug or unplug
(``DISKNAME_TEST_HOLD_AT``, :mod:`diskname.engine.crashpoints`): it waits there
for good, so the SIGKILL lands exactly at that step, whatever the machine's
speed. A second engine is then started on the same database; within one
refresh of serving, every attachment's ``active`` matches the host's devices,
no disk is ``locked`` and no intent is left. An engine that dies while another
owns the host is cleaned up by that owner, which never restarts.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from diskname.engine import EngineConfig, EngineService
from diskname.host.service import HostService

from .conftest import started, wait_until
from .fleet import engine_process, sim_hosts
from .rest import Rest

pytestmark = pytest.mark.timeout(120)
REFRESH = 1.0
HOLD = "DISKNAME_TEST_HOLD_AT"


def host_disks(host: HostService, vm_id: str) -> set[str]:
    return {d.disk_id for d in host.registry.get(vm_id).devices}


async def intents(db: Any, kind: str) -> int:
    return int(await db.fetchval("SELECT count(*) FROM plug_intents WHERE kind = $1", kind))


async def converged(rest: Rest, host: HostService, vm_id: str, db: Any) -> bool:
    """``active`` and ``status`` as the host has them, names too, and no intent left."""
    atts = (await rest.ok("GET", f"/api/vms/{vm_id}/diskattachments"))["disk_attachment"]
    on_host = host_disks(host, vm_id)
    names = host.registry.get(vm_id).mapping
    for att in atts:
        plugged = att["id"] in on_host
        if att["active"] != plugged or att["disk"]["status"] != "ok":
            return False
        if plugged and att.get("logical_name") is None and names:
            return False  # the guest named it: the engine has the name
    return not await db.fetchval("SELECT count(*) FROM plug_intents")


async def seed(rest: Rest, host: HostService) -> str:
    """A host and a VM whose root disk is plugged and named."""
    body = {"name": "h0", "address": "127.0.0.1", "port": host.port}
    host_id = (await rest.ok("POST", "/api/hosts", body, status=201))["id"]
    vm = await rest.ok("POST", "/api/vms", {"name": "vm0", "host": {"id": host_id}}, status=201)
    path = f"/api/vms/{vm['id']}/diskattachments"

    async def root_named() -> bool:
        atts = (await rest.ok("GET", path))["disk_attachment"]
        return bool(atts) and all(a["active"] and a.get("logical_name") for a in atts)

    await wait_until(root_named, timeout=20, interval=0.05)
    return str(vm["id"])


async def kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


async def restart_converges(
    pg_dsn: str, tmp_path: Path, host: HostService, vm_id: str, db: Any
) -> float:
    """Start a second engine; seconds from its serving to convergence."""
    async with (
        engine_process(pg_dsn, tmp_path, REFRESH) as (_, base),
        aiohttp.ClientSession(base_url=base) as http,
    ):
        loop = asyncio.get_running_loop()
        serving = loop.time()
        await wait_until(lambda: converged(Rest(http), host, vm_id, db), timeout=15, interval=0.02)
        return loop.time() - serving


@pytest.mark.parametrize("point", ["plug.claimed", "plug.called"])
async def test_engine_killed_in_mid_plug_converges_within_one_refresh(
    pg_dsn: str, tmp_path: Path, point: str
) -> None:
    db = await asyncpg.connect(pg_dsn)
    try:
        async with (
            sim_hosts(1, name_delay=0.0) as (host,),
            engine_process(pg_dsn, tmp_path, REFRESH, env={HOLD: point}) as (first, base),
            aiohttp.ClientSession(base_url=base) as http,
        ):
            vm_id = await seed(Rest(http), host)
            before = host_disks(host, vm_id)
            body = {"interface": "virtio", "active": True}
            plug = asyncio.create_task(
                Rest(http).call("POST", f"/api/vms/{vm_id}/diskattachments", body)
            )
            await wait_until(lambda: intents(db, "plug"), timeout=10)
            if point == "plug.called":  # the host has it; the engine holds before writing so
                await wait_until(lambda: host_disks(host, vm_id) != before, timeout=10)
            await kill(first)
            with pytest.raises(aiohttp.ClientError):
                await plug  # never answered
            # What the dead engine left: a locked disk, claimed as plugged.
            assert await db.fetchval("SELECT count(*) FROM disks WHERE status = 'locked'") == 1
            assert await db.fetchval("SELECT count(*) FROM vm_device WHERE is_plugged") == 2
            took = await restart_converges(pg_dsn, tmp_path, host, vm_id, db)
            plugged = host_disks(host, vm_id) != before
        assert plugged == (point == "plug.called")
        assert took < REFRESH, f"converged {took:.2f} s after serving"
        print(f"killed at {point}: converged {took * 1000:.0f} ms after the restart served")
    finally:
        await db.close()


@pytest.mark.parametrize("point", ["unplug.intended", "unplug.called"])
async def test_engine_killed_in_mid_unplug_converges_within_one_refresh(
    pg_dsn: str, tmp_path: Path, point: str
) -> None:
    db = await asyncpg.connect(pg_dsn)
    try:
        async with (
            sim_hosts(1, name_delay=0.0) as (host,),
            engine_process(pg_dsn, tmp_path, REFRESH, env={HOLD: point}) as (first, base),
            aiohttp.ClientSession(base_url=base) as http,
        ):
            rest = Rest(http)
            vm_id = await seed(rest, host)
            disk = await rest.hotplug(vm_id, "virtio")
            await rest.wait_name(vm_id, disk, timeout=10)
            path = f"/api/vms/{vm_id}/diskattachments/{disk}"
            unplug = asyncio.create_task(rest.call("PUT", path, {"active": False}))
            await wait_until(lambda: intents(db, "unplug"), timeout=10)
            if point == "unplug.called":
                await wait_until(lambda: disk not in host_disks(host, vm_id), timeout=10)
            await kill(first)
            with pytest.raises(aiohttp.ClientError):
                await unplug
            took = await restart_converges(pg_dsn, tmp_path, host, vm_id, db)
            still = disk in host_disks(host, vm_id)
        assert still == (point == "unplug.intended")
        assert took < REFRESH, f"converged {took:.2f} s after serving"
        print(f"killed at {point}: converged {took * 1000:.0f} ms after the restart served")
    finally:
        await db.close()


async def test_an_engine_killed_in_mid_plug_is_cleaned_up_by_the_engine_owning_the_host(
    pg_dsn: str, tmp_path: Path
) -> None:
    """The host's owner never restarts, so never reloads: its sweep finds the intent."""
    db = await asyncpg.connect(pg_dsn)
    owner = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=REFRESH))
    try:
        async with (
            sim_hosts(1, name_delay=0.0) as (host,),
            started(owner),
            aiohttp.ClientSession(base_url=f"http://127.0.0.1:{owner.http_port}") as http,
        ):
            vm_id = await seed(Rest(http), host)  # the first engine owns the host
            hold = {HOLD: "plug.claimed"}
            async with (
                engine_process(pg_dsn, tmp_path, REFRESH, env=hold) as (other, base),
                aiohttp.ClientSession(base_url=base) as other_http,
            ):
                body = {"interface": "virtio", "active": True}
                path = f"/api/vms/{vm_id}/diskattachments"
                plug = asyncio.create_task(Rest(other_http).call("POST", path, body))
                await wait_until(lambda: intents(db, "plug"), timeout=10)
                await kill(other)
                with pytest.raises(aiohttp.ClientError):
                    await plug
                loop = asyncio.get_running_loop()
                killed = loop.time()
                await wait_until(
                    lambda: converged(Rest(http), host, vm_id, db), timeout=10, interval=0.02
                )
                took = loop.time() - killed
        assert took < 2 * REFRESH, f"converged {took:.2f} s after the kill"
        print(f"the owner cleaned up another engine's plug {took * 1000:.0f} ms after its death")
    finally:
        await db.close()
