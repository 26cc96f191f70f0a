"""Issue 11 over real processes: a guest that floods, flaps or sends huge mappings harms nobody.

The engine (real PostgreSQL) and the host run as processes, as in production;
the guests are this test, writing to each VM's agent channel (a real UNIX
socket the host serves), so a guest can be as hostile as a test needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from diskname.protocol.limits import MAX_AGENT_LINE
from diskname.streams import JsonRpcClient, close_writer

from .conftest import wait_until
from .fleet import engine_process, host_process
from .rest import Rest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
REFRESH = 3.0  # the default: damping must hold with the real refresh interval


def usage(mapping: dict[str, Any]) -> bytes:
    return orjson.dumps({"__name__": "disks-usage", "mapping": mapping}) + b"\n"


class Guest:
    """The agent side of one VM's channel, driven by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        # Keep reading what the host sends, as an agent does.
        self._reading = asyncio.get_running_loop().create_task(_drain(reader))

    @classmethod
    async def connect(cls, channels: Path, vm_id: str) -> Guest:
        path = channels / f"{vm_id}.ovirt-guest-agent.0"
        await wait_until(path.exists, timeout=15)
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 20)
        await asyncio.wait_for(reader.readline(), 10)  # the host's refresh
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self._reading.cancel()
        await close_writer(self.writer)
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading


async def _drain(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while await reader.read(65536):
            pass


@dataclass
class Cluster:
    rest: Rest
    base: str
    channels: Path
    host_id: str

    async def vm(self, name: str) -> tuple[str, str]:
        """A new VM and its root disk's serial."""
        body = {"name": name, "host": {"id": self.host_id}}
        vm_id = (await self.rest.ok("POST", "/api/vms", body, status=201))["id"]
        (root,) = (await self.rest.ok("GET", f"/api/vms/{vm_id}/diskattachments"))[
            "disk_attachment"
        ]
        return vm_id, root["id"]

    async def name(self, vm_id: str, disk_id: str) -> str | None:
        return (await self.rest.attachment(vm_id, disk_id)).get("logical_name")

    async def metric(self, name: str) -> float:
        async with self.rest.http.get("/metrics") as resp:
            text = await resp.text()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.split("{")[0].split(" ")[0] == name
        )


@contextlib.asynccontextmanager
async def cluster(pg_dsn: str, tmp: Path) -> AsyncIterator[Cluster]:
    async with (
        host_process(tmp / "h") as (_, port),
        engine_process(pg_dsn, tmp / "e", REFRESH) as (_, base),
        aiohttp.ClientSession(base_url=base) as http,
    ):
        rest = Rest(http)
        body = {"name": "h1", "address": "127.0.0.1", "port": port}
        host_id = (await rest.ok("POST", "/api/hosts", body, status=201))["id"]
        yield Cluster(rest, base, tmp / "h" / "ch", host_id)


async def test_huge_mappings_do_not_starve_their_neighbours(pg_dsn: str, short_dir: Path) -> None:
    """12 guests send mappings just under the 1 MiB line cap; 40 more send ordinary ones.

    All before the engine first looks, so its first fetch asks for all 52 VMs:
    together far over one JSON-RPC frame. The host cuts its reply, the engine
    asks for the rest, and every root disk is named.
    """
    async with host_process(short_dir / "h") as (_, port):
        vms = [(str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(52)]
        guests = []
        async with await JsonRpcClient.connect("127.0.0.1", port) as rpc:
            for n, (vm_id, disk) in enumerate(vms):
                drive = {"diskId": disk, "iface": "virtio"}
                await rpc.call("VM.create", {"vmId": vm_id, "name": f"vm{n}", "devices": [drive]})
                guest = await Guest.connect(short_dir / "h" / "ch", vm_id)
                await guest.send(usage(_mapping(disk, huge=n < 12)))
                guests.append(guest)
            await wait_until(lambda: _all_reported(rpc, len(vms)), timeout=30)
        async with (
            engine_process(pg_dsn, short_dir / "e", REFRESH) as (_, base),
            aiohttp.ClientSession(base_url=base) as http,
        ):
            c = Cluster(Rest(http), base, short_dir / "h" / "ch", "")
            body = {"name": "h1", "address": "127.0.0.1", "port": port}
            await c.rest.ok("POST", "/api/hosts", body, status=201)

            async def all_named() -> bool:
                for vm_id, disk in vms:
                    status, att = await c.rest.call(
                        "GET", f"/api/vms/{vm_id}/diskattachments/{disk}"
                    )
                    if status != 200 or att.get("logical_name") != "/dev/vda":
                        return False
                return True

            await wait_until(all_named, timeout=60, interval=0.5)
            assert await c.metric("diskname_engine_host_reports_dropped_total") > 0  # deferred
        for guest in guests:
            await guest.close()


def _mapping(disk: str, *, huge: bool) -> dict[str, Any]:
    mapping: dict[str, Any] = {disk[:20]: {"name": "/dev/vda"}}
    if huge:
        filler = {"name": "/dev/disk/by-id/" + "x" * 235}
        each = len(orjson.dumps({"filler-0000": filler})) - 1
        room = (MAX_AGENT_LINE - 500 - len(usage(mapping))) // each
        mapping.update({f"filler-{k:04}": filler for k in range(room)})
        assert MAX_AGENT_LINE - 1000 < len(usage(mapping)) < MAX_AGENT_LINE
    return mapping


async def _all_reported(rpc: JsonRpcClient, count: int) -> bool:
    stats = await rpc.call("Host.getAllVmStats")
    mapped = 0
    for entry in stats:
        (full,) = await rpc.call("Host.getVMFullList", {"vmList": [entry["vmId"]]})
        mapped += bool(full.get("guestDiskMapping"))
    return mapped == count


async def test_a_flood_never_loses_the_latest_mapping(pg_dsn: str, short_dir: Path) -> None:
    async with cluster(pg_dsn, short_dir) as c:
        vm_id, disk = await c.vm("flooder")
        guest = await Guest.connect(c.channels, vm_id)
        await guest.send(usage({disk[:20]: {"name": "/dev/vda"}}))
        await wait_until(lambda: c.name(vm_id, disk), timeout=15)
        junk = b'{"__name__": "heartbeat", "apiVersion": 3}\n' + b"\xff junk\n"
        await guest.send(junk * 25_000)  # 50,000 lines in one burst
        await guest.send(usage({disk[:20]: {"name": "/dev/vdq"}}))
        assert await wait_until(lambda: _is(c, vm_id, disk, "/dev/vdq"), timeout=10)
        await guest.close()


async def _is(c: Cluster, vm_id: str, disk: str, name: str) -> bool:
    return await c.name(vm_id, disk) == name


async def test_a_flapping_guest_costs_bounded_writes_and_its_last_name_lands_within_1s(
    pg_dsn: str, short_dir: Path
) -> None:
    async with cluster(pg_dsn, short_dir) as c:
        vm_id, disk = await c.vm("flapper")
        neighbour, neighbour_disk = await c.vm("neighbour")
        guest = await Guest.connect(c.channels, vm_id)
        other = await Guest.connect(c.channels, neighbour)
        serial = disk[:20]
        await guest.send(usage({serial: {"name": "/dev/vda"}}))
        await wait_until(lambda: c.name(vm_id, disk), timeout=15)
        writes_before = await c.metric("diskname_engine_db_writes_total")
        loop = asyncio.get_running_loop()
        end = loop.time() + 5.0
        n = 0
        while loop.time() < end:  # ~700 name changes a second for 5 s
            for _ in range(7):
                await guest.send(usage({serial: {"name": f"/dev/vd{'ab'[n % 2]}"}}))
                n += 1
            await asyncio.sleep(0.01)  # sync-ok: paces the flapping guest
        await guest.send(usage({serial: {"name": "/dev/vdz"}}))
        settled = loop.time()
        await other.send(usage({neighbour_disk[:20]: {"name": "/dev/vda"}}))
        await wait_until(lambda: _is(c, vm_id, disk, "/dev/vdz"), timeout=10, interval=0.02)
        landed = loop.time() - settled
        writes = await c.metric("diskname_engine_db_writes_total") - writes_before
        await wait_until(lambda: _is(c, neighbour, neighbour_disk, "/dev/vda"), timeout=5)
        print(f"{n} flaps in 5 s: {writes:.0f} database writes, last name after {landed:.2f} s")
        assert n > 500  # the test's own pace (~700 a second unloaded, less on a busy machine)
        assert writes <= 100
        assert landed <= 1.0
        await guest.close()
        await other.close()
