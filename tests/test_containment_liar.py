"""Issue 23 over real processes: a host with a valid registration lies about disks and names.

A real host (with the real agent in its VM) owns a VM with a plugged root disk and
a disk attached but unplugged. A second, lying host (the fake host over its real
JSON-RPC) reports a VM of its own claiming both disks by id and serial, a disk of
its own, and VM names with an escape sequence and a bidi override. The engine
keeps every claim on the other host's disks out, stores the names clean, lets
the owner plug its disk back (and the guest names it), shows the liar's VMs
``unknown`` once it stops, and lets an admin clear what it holds with
``force=true``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diskname.protocol.disks import disk_serial

from .conftest import wait_until
from .engine_fakehost import FakeHost
from .fleet import engine_process, host_process
from .rest import Rest
from .test_containment_hosts import guests, metric, new_vm, register

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
REFRESH = 0.5


def device(disk_id: str, serial: str | None = None) -> dict[str, Any]:
    return {
        "deviceId": str(uuid.uuid4()),
        "diskId": disk_id,
        "serial": serial or disk_serial(disk_id),
        "iface": "virtio",
        "address": None,
        "plugged": True,
        "type": "disk",
    }


def lying_host(victim_disks: list[str]) -> tuple[FakeHost, str, str, str]:
    """A fake host whose VM claims ``victim_disks``, one disk of its own, and bad names."""
    liar = FakeHost()
    vm = liar.add_vm(str(uuid.uuid4()), "\x1b[31mowned\x1b[0m")
    own = str(uuid.uuid4())
    stolen_serial = str(uuid.uuid4())  # a new disk id carrying the victim's serial
    vm.devices = [device(d) for d in victim_disks]
    vm.devices += [device(own), device(stolen_serial, disk_serial(victim_disks[0]))]
    names = iter(["/dev/vdy", "/dev/vdx", "/dev/vdz"])
    vm.mapping = {disk_serial(d): {"name": next(names)} for d in [*victim_disks, own]}
    other = liar.add_vm(str(uuid.uuid4()), "\u202eevil\u200b")
    return liar, vm.vm_id, other.vm_id, own


async def test_a_lying_host_changes_nothing_of_another_hosts_disks(
    pg_dsn: str, short_dir: Path
) -> None:
    async with (
        host_process(short_dir / "h1") as (_, port1),
        engine_process(pg_dsn, short_dir / "e", REFRESH) as (_, base),
        aiohttp.ClientSession(base_url=base) as http,
    ):
        rest = Rest(http)
        real = await register(rest, "real", port1)
        vm, root = await new_vm(rest, real, "victim")
        async with guests(short_dir / "h1" / "ch", [vm]):
            await rest.wait_name(vm, root, timeout=15)
            spare = await rest.hotplug(vm, "virtio")
            await rest.wait_name(vm, spare, timeout=15)
            spare_path = f"/api/vms/{vm}/diskattachments/{spare}"
            await rest.ok("PUT", spare_path, {"active": False})  # attached, unplugged
            before = await rest.ok("GET", f"/api/vms/{vm}/diskattachments")

            liar, liar_vm, other_vm, own = lying_host([spare, root])
            await liar.start()
            try:
                liar_id = await register(rest, "liar", liar.port)
                await _check_claims_refused(rest, vm, before, liar_vm, other_vm, own)
                # The owner plugs its disk back, and the guest names it.
                plugged = await rest.ok("PUT", spare_path, {"active": True})
                assert plugged["active"] is True
                name, _ = await rest.wait_name(vm, spare, timeout=15)
                assert name.startswith("/dev/vd") and name != "/dev/vdy"
            finally:
                await liar.close()
            await _unknown_within_three_refreshes(rest, liar_vm)
            await _admin_clears_the_liar(rest, liar_id, liar_vm, other_vm, own)
            assert (await rest.attachment(vm, spare))["logical_name"] == name


async def _check_claims_refused(
    rest: Rest, vm: str, before: Any, liar_vm: str, other_vm: str, own: str
) -> None:
    async def adopted() -> Any:
        status, atts = await rest.call("GET", f"/api/vms/{liar_vm}/diskattachments")
        return status == 200 and atts["disk_attachment"]

    (att,) = await wait_until(adopted, timeout=15)  # its own disk, and nothing else
    assert att["id"] == own and att["active"] and att["logical_name"] == "/dev/vdz"
    assert await metric(rest, "diskname_engine_host_claims_refused_total") >= 3
    assert await rest.ok("GET", f"/api/vms/{vm}/diskattachments") == before
    for vm_id in (liar_vm, other_vm):  # names a terminal or a page would obey: not kept
        assert (await rest.ok("GET", f"/api/vms/{vm_id}"))["name"] == vm_id


async def _unknown_within_three_refreshes(rest: Rest, vm: str) -> None:
    loop = asyncio.get_running_loop()
    stopped = loop.time()

    async def unknown() -> bool:
        return bool((await rest.ok("GET", f"/api/vms/{vm}"))["status"] == "unknown")

    await wait_until(unknown, timeout=10)
    took = loop.time() - stopped
    print(f"the stopped host's VM was unknown after {took * 1000:.0f} ms")
    assert took < 3 * REFRESH


async def _admin_clears_the_liar(rest: Rest, host: str, vm: str, other_vm: str, own: str) -> None:
    att = f"/api/vms/{vm}/diskattachments/{own}"
    status, error = await rest.call("DELETE", att)
    assert status == 409 and "force=true" in error["error"]["message"]
    assert "\n" not in error["error"]["message"]
    await rest.ok("DELETE", att + "?force=true", status=204)
    status, _ = await rest.call("DELETE", f"/api/vms/{vm}")
    assert status == 409
    await rest.ok("DELETE", f"/api/vms/{vm}?force=true", status=204)
    status, error = await rest.call("DELETE", f"/api/hosts/{host}")
    assert status == 409 and "force=true" in error["error"]["message"]
    status, error = await rest.call("DELETE", f"/api/hosts/{host}?force=maybe")
    assert status == 400
    await rest.ok("DELETE", f"/api/hosts/{host}?force=true", status=204)
    assert (await rest.call("GET", f"/api/vms/{other_vm}"))[0] == 404
    disk = await rest.ok("GET", f"/api/disks?id={own}")
    assert disk["disk"][0]["attachments"] == []  # the disk stays, detached
