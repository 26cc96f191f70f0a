"""Issue 22's locked disks after a crash (SPEC §18, §19 "Crashes"): an engine killed
(SIGKILL) while a floating disk is "locked" leaves it to the next engine.

The engine runs as a process held at a step of the disk's image creation
(``DISKNAME_TEST_HOLD_AT``, :mod:`diskname.engine.crashpoints`): before the host
is asked (``image.intended``) or once the host made the image but the disk is
still locked (``image.called``). A new engine on the same database makes the
disk "ok" with its image made once on the host, or "illegal" with the reason
when the host's domain (or the host) is gone. A creation whose engine is alive
is never touched by the engine owning the host; once that engine dies, the
owner resumes it without restarting.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from diskname.engine import EngineConfig, EngineService
from diskname.engine.actions.images import Images
from diskname.engine.core.images import DOMAIN_GONE
from diskname.engine.hosts.fleet import Monitors
from diskname.host.service import HostService

from .conftest import started, wait_until
from .fleet import engine_process, sim_hosts
from .rest import Rest

pytestmark = pytest.mark.timeout(120)
REFRESH = 1.0
HOLD = "DISKNAME_TEST_HOLD_AT"
GIB = 1 << 30
BODY = {"name": "floater", "provisioned_size": 2 * GIB, "storage_domains": [{"name": "data"}]}


def watch_creations(host: HostService) -> list[tuple[str, bool]]:
    """Every ``Image.create`` the sim host's domain gets: (disk, whether it existed)."""
    domain: Any = host.storage
    calls: list[tuple[str, bool]] = []
    create = domain.create

    async def counted(request: Any) -> None:
        calls.append((request.disk_id, request.disk_id in domain.images))
        await create(request)

    domain.create = counted
    return calls


async def add_host(rest: Rest, host: HostService) -> str:
    """Register the host; return once its storage domain is listed (the host is up)."""
    body = {"name": "h0", "address": "127.0.0.1", "port": host.port}
    host_id = str((await rest.ok("POST", "/api/hosts", body, status=201))["id"])

    async def listed() -> bool:
        return bool((await rest.ok("GET", "/api/storagedomains"))["storage_domain"])

    await wait_until(listed, timeout=10, interval=0.05)
    return host_id


async def disk_row(db: Any, disk_id: str) -> tuple[str, str | None, int]:
    row = await db.fetchrow(
        """SELECT status, status_reason,
                  (SELECT count(*) FROM image_intents WHERE disk_id = d.id) AS intents
           FROM disks d WHERE id = $1""",
        disk_id,
    )
    return (row["status"], row["status_reason"], row["intents"])


async def settled(db: Any, disk_id: str) -> tuple[str, str | None] | None:
    status, reason, intents = await disk_row(db, disk_id)
    return (status, reason) if status != "locked" and not intents else None


async def kill(proc: Any) -> None:
    proc.send_signal(signal.SIGKILL)
    await proc.wait()


@asynccontextmanager
async def database(dsn: str) -> AsyncIterator[Any]:
    db = await asyncpg.connect(dsn)
    try:
        yield db
    finally:
        await db.close()


async def killed_while_locked(
    dsn: str, tmp: Path, host: HostService, point: str
) -> tuple[str, str]:
    """An engine held at ``point`` of a new disk's creation, killed there: (host, disk)."""
    async with (
        engine_process(dsn, tmp, REFRESH, env={HOLD: point}) as (first, base),
        aiohttp.ClientSession(base_url=base) as http,
    ):
        rest = Rest(http)
        host_id = await add_host(rest, host)
        disk = await rest.ok("POST", "/api/disks", BODY, status=201)
        assert disk["status"] == "locked"
        if point == "image.called":  # the host has made it; the engine holds before storing so
            await wait_until(lambda: disk["id"] in host.storage.images, timeout=10)  # type: ignore[attr-defined]
        await kill(first)
    return host_id, str(disk["id"])


async def until_settled(
    dsn: str, tmp: Path, db: Any, disk_id: str
) -> tuple[str, str | None, float, float]:
    """Start a new engine; the disk's outcome, and seconds from the process's start
    and from its serving to that outcome."""
    loop = asyncio.get_running_loop()
    spawned = loop.time()
    async with engine_process(dsn, tmp, REFRESH):
        serving = loop.time()
        status, reason = await wait_until(lambda: settled(db, disk_id), timeout=15, interval=0.02)
        done = loop.time()
        return status, reason, done - spawned, done - serving


@pytest.mark.parametrize("point", ["image.intended", "image.called"])
async def test_a_disk_locked_by_a_killed_engine_is_made_ok_after_the_restart(
    pg_dsn: str, tmp_path: Path, point: str
) -> None:
    async with database(pg_dsn) as db, sim_hosts(1, name_delay=0.0) as (host,):
        creations = watch_creations(host)
        _, disk_id = await killed_while_locked(pg_dsn, tmp_path, host, point)
        assert await disk_row(db, disk_id) == ("locked", None, 1)  # what the dead engine left
        assert [c[0] for c in creations] == ([disk_id] if point == "image.called" else [])
        status, reason, whole, took = await until_settled(pg_dsn, tmp_path, db, disk_id)
        assert (status, reason) == ("ok", None)
        assert host.storage.images == {disk_id: 2 * GIB}  # type: ignore[attr-defined]
        made = [disk for disk, existed in creations if not existed]
        assert made == [disk_id], creations  # made once: the resumed call found it there
    assert took < 2 * REFRESH, f"ok {took:.2f} s after serving"
    print(
        f"killed at {point}: the disk was ok {whole:.2f} s after the new engine was started,"
        f" {took * 1000:.0f} ms after it served"
    )


async def test_a_disk_whose_domain_went_with_the_host_restart_is_illegal(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with database(pg_dsn) as db:
        async with sim_hosts(1, name_delay=0.0) as (host,):
            _, disk_id = await killed_while_locked(pg_dsn, tmp_path, host, "image.intended")
            # The host no longer has the domain (its pool was removed, say).
            host.storage.name = "elsewhere"  # type: ignore[attr-defined]
            status, reason, whole, _ = await until_settled(pg_dsn, tmp_path, db, disk_id)
            assert host.storage.images == {}  # type: ignore[attr-defined]
        assert status == "illegal"
        assert reason is not None and "no storage domain 'data'" in reason, reason
        print(f"domain gone from its host: illegal {whole:.2f} s after the new engine was started")


async def test_a_disk_whose_host_was_removed_is_illegal_and_deletable(
    pg_dsn: str, tmp_path: Path
) -> None:
    async with database(pg_dsn) as db:
        async with sim_hosts(1, name_delay=0.0) as (host,):
            host_id, disk_id = await killed_while_locked(pg_dsn, tmp_path, host, "image.intended")
        # The host is down: the new engine waits for it, and a DELETE of the locked disk
        # is a 409, never a 5xx. Then the host is removed, its domain with it.
        async with (
            engine_process(pg_dsn, tmp_path, REFRESH) as (_, base),
            aiohttp.ClientSession(base_url=base) as http,
        ):
            rest = Rest(http)
            status, error = await rest.call("DELETE", f"/api/disks/{disk_id}")
            assert status == 409 and "locked" in error["error"]["message"]
            assert await disk_row(db, disk_id) == ("locked", None, 1)
            await rest.ok("DELETE", f"/api/hosts/{host_id}", status=204)
            got = await wait_until(lambda: settled(db, disk_id), timeout=10, interval=0.02)
            assert got == ("illegal", DOMAIN_GONE)
            await rest.ok("DELETE", f"/api/disks/{disk_id}", status=204)


async def test_the_owner_leaves_a_live_creation_alone_and_resumes_it_once_its_engine_dies(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds = sweeps = 0
    balancing_round, image_sweep = Monitors.rebalance, Images.sweep

    async def counted_round(self: Monitors) -> None:
        nonlocal rounds
        await balancing_round(self)
        rounds += 1

    async def counted_sweep(self: Images) -> None:
        nonlocal sweeps
        await image_sweep(self)
        sweeps += 1

    # The owner's, in this process: its balancing rounds, and the image sweeps they woke.
    monkeypatch.setattr(Monitors, "rebalance", counted_round)
    monkeypatch.setattr(Images, "sweep", counted_sweep)
    owner = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=REFRESH))
    async with (
        database(pg_dsn) as db,
        sim_hosts(1, name_delay=0.0) as (host,),
        started(owner),
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{owner.http_port}") as http,
    ):
        await add_host(Rest(http), host)  # this engine owns the host
        creations = watch_creations(host)
        async with (
            engine_process(pg_dsn, tmp_path, REFRESH, env={HOLD: "image.intended"}) as (
                other,
                base,
            ),
            aiohttp.ClientSession(base_url=base) as other_http,
        ):
            disk = await Rest(other_http).ok("POST", "/api/disks", BODY, status=201)
            seen = rounds
            await wait_until(lambda: rounds >= seen + 3, timeout=10)  # the owner looked, thrice
            assert sweeps == 0  # its creator is alive: nothing was left to sweep
            assert await disk_row(db, disk["id"]) == ("locked", None, 1)
            assert creations == []  # its creator is alive: the owner did not touch it
            await kill(other)
            loop = asyncio.get_running_loop()
            killed = loop.time()
            got = await wait_until(lambda: settled(db, disk["id"]), timeout=10, interval=0.02)
            took = loop.time() - killed
        assert got == ("ok", None) and creations == [(disk["id"], False)]
    assert took < 2 * REFRESH, f"ok {took:.2f} s after the kill"
    print(f"the owner resumed another engine's creation {took * 1000:.0f} ms after its death")
