"""Floating disks and storage domains through the JSON API (SPEC §18), against a dev
cluster (engine, sim hosts, agents) on real sockets and real PostgreSQL: a disk made in a
host's domain, locked then ok, attached by id with its size reaching the hypervisor,
refused on another host's VM, deleted with its image (409 while attached)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from .conftest import wait_until
from .devcluster import Dev, dev

pytestmark = pytest.mark.timeout(90)
GIB = 1 << 30


async def _domains(d: Dev) -> list[dict[str, Any]]:
    return list((await d.rest.ok("GET", "/api/storagedomains"))["storage_domain"])


async def _row(d: Dev, disk_id: str) -> tuple[str, str | None]:
    """The disk's status and reason as stored (the JSON API lists disks by serial)."""
    conn = await asyncpg.connect(d.dsn)
    try:
        row = await conn.fetchrow("SELECT status, status_reason FROM disks WHERE id = $1", disk_id)
    finally:
        await conn.close()
    return (row["status"], row["status_reason"])


async def _status(d: Dev, disk_id: str, status: str) -> bool:
    return (await _row(d, disk_id))[0] == status


async def test_a_floating_disk_is_made_attached_and_removed(pg_dsn: str) -> None:
    async with dev(pg_dsn, hosts=2, vms=1) as d:
        domains = await _domains(d)
        assert sorted(x["kind"] for x in domains) == ["memory", "memory"]
        assert {x["name"] for x in domains} == {"data"}
        vm = await d.vm()
        vm_host = (await d.rest.ok("GET", f"/api/vms/{vm}"))["host"]["id"]
        mine = next(x for x in domains if x["host"]["id"] == vm_host)
        other = next(x for x in domains if x["host"]["id"] != vm_host)

        # Two domains are named "data": by name is ambiguous, by id is not.
        body: dict[str, Any] = {"name": "floater", "provisioned_size": 3 * GIB}
        status, error = await d.rest.call(
            "POST", "/api/disks", {**body, "storage_domains": [{"name": "data"}]}
        )
        assert status == 409 and "give its id" in error["error"]["message"]
        disk = await d.rest.ok(
            "POST", "/api/disks", {**body, "storage_domains": [{"id": mine["id"]}]}, status=201
        )
        assert disk["status"] in ("locked", "ok") and disk["format"] == "cow" and disk["sparse"]
        assert disk["storage_domains"] == [{"id": mine["id"], "name": "data"}]

        async def made() -> bool:
            listed = {x["id"]: x for x in await _domains(d)}
            return bool(listed[mine["id"]]["used"] == 3 * GIB)

        await wait_until(made)
        far = await d.rest.ok(
            "POST",
            "/api/disks",
            {"name": "far", "provisioned_size": GIB, "storage_domains": [{"id": other["id"]}]},
            status=201,
        )

        # Attached by id: plugged with its size and domain, named by the guest.
        base = f"/api/vms/{vm}/diskattachments"
        await wait_until(lambda: _status(d, disk["id"], "ok"))
        att = await d.rest.ok(
            "POST", base, {"interface": "virtio", "disk": {"id": disk["id"]}}, status=201
        )
        assert att["disk"]["provisioned_size"] == 3 * GIB and att["disk"]["status"] == "ok"
        assert (await d.rest.wait_name(vm, disk["id"]))[0] == "/dev/vdb"
        host = next(h for h in d.cluster.hosts if h.host_id == vm_host)
        device = host.registry.get(vm).state.device(disk["id"])
        assert device is not None and (device.size, device.domain) == (3 * GIB, "data")

        # Another host's image cannot be plugged here.
        await wait_until(lambda: _status(d, far["id"], "ok"))
        status, error = await d.rest.call(
            "POST", base, {"interface": "virtio", "disk": {"id": far["id"]}}
        )
        assert status == 409 and "only be plugged into that host's VMs" in error["error"]["message"]

        # Deleted only once detached; its image goes with it.
        status, _ = await d.rest.call("DELETE", f"/api/disks/{disk['id']}")
        assert status == 409
        await d.rest.ok("DELETE", f"{base}/{disk['id']}", status=204)
        await d.rest.ok("DELETE", f"/api/disks/{disk['id']}", status=204)
        listed = {x["id"]: x for x in await _domains(d)}
        assert listed[mine["id"]]["used"] == 0 and listed[other["id"]]["used"] == GIB
        assert (await d.rest.call("DELETE", f"/api/disks/{disk['id']}"))[0] == 404

        # oVirt's detach_only=false removes the disk with its image too.
        again = await d.rest.ok(
            "POST",
            "/api/disks",
            {"name": "again", "provisioned_size": GIB, "storage_domains": [{"id": mine["id"]}]},
            status=201,
        )
        await wait_until(lambda: _status(d, again["id"], "ok"))
        await d.rest.ok("POST", base, {"interface": "virtio", "disk": {"id": again["id"]}}, 201)
        path = f"/ovirt-engine/api/vms/{vm}/diskattachments/{again['id']}?detach_only=false"
        async with d.rest.http.request("DELETE", path) as resp:
            assert resp.status == 200, await resp.text()
        listed = {x["id"]: x for x in await _domains(d)}
        assert listed[mine["id"]]["used"] == 0


async def test_bad_disks_and_unknown_domains_are_refused(pg_dsn: str) -> None:
    async with dev(pg_dsn) as d:
        good = {"name": "x", "provisioned_size": GIB, "storage_domains": [{"name": "data"}]}
        for bad in (
            {**good, "storage_domains": []},
            {**good, "storage_domains": [{}]},
            {**good, "format": "vmdk"},
            {**good, "provisioned_size": 0},
            {**good, "provisioned_size": 1 << 60},
            {"provisioned_size": GIB, "storage_domains": [{"name": "data"}]},
        ):
            assert (await d.rest.call("POST", "/api/disks", bad))[0] == 400, bad
        status, _ = await d.rest.call(
            "POST", "/api/disks", {**good, "storage_domains": [{"name": "nfs"}]}
        )
        assert status == 422
        # A domain with no room: the disk is illegal, with the host's reason.
        huge = await d.rest.ok("POST", "/api/disks", {**good, "provisioned_size": 1 << 50}, 201)
        await wait_until(lambda: _status(d, huge["id"], "illegal"))
        reason = (await _row(d, huge["id"]))[1]
        assert reason is not None and "no room" in reason
