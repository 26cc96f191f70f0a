"""Issue 15 over real parts: name history, direct LUNs, the cluster gate, host removal and
resumable events, each against a dev cluster (engine, host, simulated guests running the
real agent) on real sockets and real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from diskname.streams import JsonRpcClient

from .conftest import running_host, wait_until
from .devcluster import Dev, dev

pytestmark = pytest.mark.timeout(90)
DEFAULT_CLUSTER = "00000000-0000-0000-0000-000000000001"


# -- history -----------------------------------------------------------------------


async def test_history_lists_every_name_newest_first(pg_dsn: str) -> None:
    async with dev(pg_dsn) as d:
        vm = await d.vm()
        disk = await d.rest.hotplug(vm, "virtio")
        await d.rest.wait_name(vm, disk)
        path = f"/api/vms/{vm}/diskattachments/{disk}"
        await d.rest.ok("PUT", path, {"active": False})
        await d.rest.wait_unnamed(vm, disk)
        await d.rest.ok("PUT", path, {"active": True})
        await d.rest.wait_name(vm, disk)

        history = (await d.rest.ok("GET", path + "/history"))["history"]
        assert [(h["logical_name"], h["previous"], h["source"]) for h in history] == [
            ("/dev/vdb", None, "agent"),
            (None, "/dev/vdb", "unplug"),
            ("/dev/vdb", None, "agent"),
        ]
        assert history[0]["matched_by"] == "serial"
        times = [h["seen_at"] for h in history]
        assert times == sorted(times, reverse=True)
        assert len((await d.rest.ok("GET", path + "/history?max=1"))["history"]) == 1
        assert (await d.rest.call("GET", path + "/history?max=0"))[0] == 400

        # Detached, the attachment and its history are gone from the API.
        await d.rest.ok("DELETE", path, status=204)
        assert (await d.rest.call("GET", path + "/history"))[0] == 404


# -- direct LUNs ---------------------------------------------------------------------

LUN = "36001405f1e2d3c4b5a69788776655443"  # a WWID: longer than virtio's 20 bytes


async def test_direct_lun_keeps_its_serial_and_is_named(pg_dsn: str) -> None:
    async with dev(pg_dsn) as d:
        vm = await d.vm()
        base = f"/api/vms/{vm}/diskattachments"
        # On virtio the guest sees the serial cut to 20 characters: matched as cut short.
        body = {"interface": "virtio", "disk": {"lun_storage": {"serial": LUN}}}
        att = await d.rest.ok("POST", base, body, status=201)
        assert att["disk"]["lun_storage"] == {"serial": LUN}
        assert att["disk"]["storage_type"] == "lun"
        assert not LUN.startswith(att["id"][:20])
        assert (await d.rest.wait_name(vm, att["id"]))[0] == "/dev/vdb"
        named = await d.rest.attachment(vm, att["id"])
        assert named["logical_name_source"] == "serial-prefix"

        # On SCSI the guest reports it whole, bus-prefixed: matched by its end.
        scsi_serial = "naa.600140512345678"
        body = {"interface": "virtio_scsi", "disk": {"lun_storage": {"serial": scsi_serial}}}
        scsi = await d.rest.ok("POST", base, body, status=201)
        assert re.fullmatch(r"/dev/sd[a-z]", (await d.rest.wait_name(vm, scsi["id"]))[0])
        assert (await d.rest.attachment(vm, scsi["id"]))["logical_name_source"] == "serial"

        # One LUN is one disk; both an id and a LUN is no request at all.
        status, error = await d.rest.call("POST", base, {"interface": "virtio", **_lun(LUN)})
        assert status == 409 and "exists" in error["error"]["message"]
        both = {"interface": "virtio", "disk": {"id": att["id"], "lun_storage": {"serial": "x"}}}
        assert (await d.rest.call("POST", base, both))[0] == 400
        bad = {"interface": "virtio", "disk": {"lun_storage": {"serial": "has space"}}}
        assert (await d.rest.call("POST", base, bad))[0] == 400
        # The disk is found by the serial the guest shows, cut short or prefixed.
        found = (await d.rest.ok("GET", f"/api/disks?serial={LUN[:20]}"))["disk"]
        assert [disk["id"] for disk in found] == [att["id"]]
        found = await d.rest.ok("GET", f"/api/disks?serial=0QEMU_QEMU_HARDDISK_{scsi_serial}")
        assert [disk["id"] for disk in found["disk"]] == [scsi["id"]]


def _lun(serial: str) -> dict[str, Any]:
    return {"disk": {"lun_storage": {"serial": serial}}}


# -- clusters ----------------------------------------------------------------------


async def _host_hash(d: Dev, vm: str) -> tuple[str, dict[str, Any]]:
    host = d.cluster.hosts[0]
    client = await JsonRpcClient.connect("127.0.0.1", host.port)
    try:
        [full] = await client.call("Host.getVMFullList", {"vmList": [vm]})
    finally:
        await client.close()
    return full["hash"], full["guestDiskMapping"]


async def _stored_hash(d: Dev, vm: str) -> str | None:
    conn = await asyncpg.connect(d.dsn)
    try:
        value: str | None = await conn.fetchval("SELECT hash FROM vms WHERE id = $1", vm)
        return value
    finally:
        await conn.close()


async def test_cluster_gate_keeps_no_names_at_3_4_and_names_within_a_refresh_at_4_7(
    pg_dsn: str,
) -> None:
    # Polls a minute apart: only the version change itself can make the engine look again.
    async with dev(pg_dsn, refresh_interval=60.0) as d:
        clusters = (await d.rest.ok("GET", "/api/clusters"))["cluster"]
        assert clusters == [
            {
                "id": DEFAULT_CLUSTER,
                "name": "Default",
                "compatibility_version": "4.7",
                "keeps_names": True,
            }
        ]
        vm = await d.vm()
        root = (await d.atts(vm))[0]["id"]
        await d.rest.wait_name(vm, root)

        path = f"/api/clusters/{DEFAULT_CLUSTER}"
        old = await d.rest.ok("PUT", path, {"compatibility_version": "3.4"})
        assert old["keeps_names"] is False
        await d.rest.wait_unnamed(vm, root)  # lowering drops the names it kept
        disk = await d.rest.hotplug(vm, "virtio")

        async def guest_named_it_and_engine_stored_that() -> bool:
            host_hash, mapping = await _host_hash(d, vm)
            return disk[:20] in mapping and await _stored_hash(d, vm) == host_hash

        await wait_until(guest_named_it_and_engine_stored_that, timeout=10)
        assert (await d.rest.attachment(vm, disk))["logical_name"] is None
        assert (await d.rest.attachment(vm, root))["logical_name"] is None
        history = await d.rest.ok("GET", f"/api/vms/{vm}/diskattachments/{root}/history")
        assert history["history"][0]["source"] == "cluster"

        loop = asyncio.get_running_loop()
        raised_at = loop.time()
        new = await d.rest.ok("PUT", path, {"compatibility_version": "4.7"})
        assert new["keeps_names"] is True
        assert (await d.rest.wait_name(vm, disk))[0] == "/dev/vdb"
        assert (await d.rest.wait_name(vm, root))[0] == "/dev/vda"
        took = loop.time() - raised_at
        print(f"names back {1000 * took:.0f} ms after raising the version")
        assert took < 3.0  # within one (default) refresh interval, though polls are 60 s apart

        for body in ({"compatibility_version": "4"}, {"compatibility_version": 4.7}, {"name": ""}):
            assert (await d.rest.call("PUT", path, body))[0] == 400
        missing = "/api/clusters/00000000-0000-0000-0000-00000000ffff"
        assert (await d.rest.call("PUT", missing, {"name": "x"}))[0] == 404


# -- hosts -------------------------------------------------------------------------


async def _owned_hosts(http: aiohttp.ClientSession) -> set[str]:
    async with http.get("/metrics") as resp:
        text = await resp.text()
    return set(re.findall(r'diskname_engine_host_owned\{host="([^"]+)"\} 1', text))


async def test_a_host_without_vms_is_forgotten_and_no_longer_monitored(
    pg_dsn: str, short_dir: Path
) -> None:
    async with dev(pg_dsn) as d, running_host(short_dir) as spare:
        body = {"name": "spare", "address": "127.0.0.1", "port": spare.port}
        host = await d.rest.ok("POST", "/api/hosts", body, status=201)

        async def up() -> bool:
            found = await d.rest.ok("GET", f"/api/hosts/{host['id']}")
            return bool(found["status"] == "up")

        await wait_until(up, timeout=10)
        assert "spare" in await _owned_hosts(d.rest.http)

        listed = (await d.rest.ok("GET", "/api/hosts"))["host"]
        dev_host = next(h for h in listed if h["name"] == "host0")
        assert dev_host["id"] == d.cluster.hosts[0].host_id  # host and engine logs agree
        status, error = await d.rest.call("DELETE", f"/api/hosts/{dev_host['id']}")
        assert status == 409 and "VMs" in error["error"]["message"]

        await d.rest.ok("DELETE", f"/api/hosts/{host['id']}", status=204)
        assert (await d.rest.call("GET", f"/api/hosts/{host['id']}"))[0] == 404
        assert (await d.rest.call("DELETE", f"/api/hosts/{host['id']}"))[0] == 404
        assert "spare" not in await _owned_hosts(d.rest.http)
        # Its monitor is gone: the host sees the engine's connection close.
        await wait_until(lambda: not spare.rpc._connections.writers, timeout=10)
        assert [h["name"] for h in (await d.rest.ok("GET", "/api/hosts"))["host"]] == ["host0"]


# -- events ------------------------------------------------------------------------


async def _events(resp: aiohttp.ClientResponse, count: int) -> list[tuple[int, dict[str, Any]]]:
    """The next ``count`` name-change events (id, data) of a stream.

    Events of another type (``event: guest``, SPEC §17) are passed over, as a
    browser's ``onmessage`` does.
    """
    found: list[tuple[int, dict[str, Any]]] = []
    event_id: int | None = None
    kind: str | None = None
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            assert event_id is not None, "an event without id"
            if kind is None:
                found.append((event_id, orjson.loads(line[6:])))
            event_id = kind = None
            if len(found) == count:
                return found
    raise AssertionError("the stream ended")


def _of_guest_event(line: bytes) -> bool:
    return line.startswith((b"id: ", b"event: guest")) or (
        line.startswith(b"data: ") and b'"kind":"guest"' in line
    )


async def _next_line(resp: aiohttp.ClientResponse) -> bytes:
    """The next line that is not blank nor part of a guest view's event."""
    while (line := await resp.content.readline()) == b"\n" or _of_guest_event(line):
        pass
    return line


async def test_events_resume_after_a_cut_with_last_event_id(pg_dsn: str) -> None:
    async with dev(pg_dsn, keepalive=0.2) as d:
        vm = await d.vm()
        await d.rest.wait_name(vm, (await d.atts(vm))[0]["id"])
        base = d.cluster.base_url + "/api/events"
        async with aiohttp.ClientSession() as http:
            async with http.get(base) as resp:
                first = await d.rest.hotplug(vm, "virtio")
                [(seen, event)] = await asyncio.wait_for(_events(resp, 1), 10)
                assert event["disk_id"] == first and event["new"] == "/dev/vdb"
                assert event["id"] == seen and event["source"] == "agent"
                # Quiet now: a keepalive comment comes within the interval.
                line = await asyncio.wait_for(_next_line(resp), 5)
                assert line == b": keepalive\n", line
            # The client is cut; meanwhile a disk is plugged and another unplugged.
            second = await d.rest.hotplug(vm, "virtio_scsi")
            await d.rest.wait_name(vm, second)
            await d.rest.ok("PUT", f"/api/vms/{vm}/diskattachments/{first}", {"active": False})
            await d.rest.wait_unnamed(vm, first)

            headers = {"Last-Event-ID": str(seen)}
            async with http.get(base, headers=headers) as resp:
                missed = await asyncio.wait_for(_events(resp, 2), 10)
                assert [(e["disk_id"], e["new"] is None) for _, e in missed] == [
                    (second, False),
                    (first, True),
                ]
                assert [i for i, _ in missed] == sorted(i for i, _ in missed)
                assert missed[0][0] > seen
                # Then live events follow on the same stream, none twice.
                third = await d.rest.hotplug(vm, "virtio")
                [(live_id, live)] = await asyncio.wait_for(_events(resp, 1), 10)
                assert live["disk_id"] == third and live_id > missed[-1][0]
            # The query form works for clients that cannot set headers.
            async with http.get(f"{base}?last_event_id={missed[-1][0]}") as resp:
                [(_, again)] = await asyncio.wait_for(_events(resp, 1), 10)
                assert again["disk_id"] == third
