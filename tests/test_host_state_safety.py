"""Issue 23 (SPEC §19 "Crashes"), the host's side: its state file is the truth it restarts from.

* A host whose state directory is full refuses a plug (JSON-RPC ``STATE_NOT_WRITTEN``,
  the hypervisor's plug undone): the REST request gets a 507 JSON error and nothing
  is acknowledged or stored; once the host has room the same request works.
* A host whose state file is corrupt, then restarted, gets its VMs back from the
  engine (``VM.create`` with the disks the engine has plugged), and the guests'
  names come back.

Real parts: an engine and hosts in this process, PostgreSQL, loopback sockets, the
simulated guests' agents; ENOSPC is real (the write goes through a /dev/full link).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diskname.engine import EngineConfig, EngineService
from diskname.host.service import HostConfig, HostService
from diskname.protocol.host_wire import Code
from diskname.streams import JsonRpcClient, RpcError

from .conftest import started, wait_until
from .fleet import sim_guest
from .rest import Rest

pytestmark = pytest.mark.timeout(60)
REFRESH = 0.2


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="dns"))  # short: agent channels are UNIX sockets
    yield path
    shutil.rmtree(path, ignore_errors=True)


def a_host(root: Path, port: int = 0) -> HostService:
    config = HostConfig(
        listen_port=port,
        state_dir=root / "state",
        channels_dir=root / "ch",
        channel_mode="listen",
        host_id="h0",
    )
    return HostService(config, guest_launcher=sim_guest(0.0))


@contextlib.asynccontextmanager
async def an_engine(pg_dsn: str) -> AsyncIterator[Rest]:
    engine = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=REFRESH))
    async with (
        started(engine),
        aiohttp.ClientSession(base_url=f"http://127.0.0.1:{engine.http_port}") as http,
    ):
        yield Rest(http)


async def a_vm(rest: Rest, host: HostService) -> str:
    body = {"name": "h0", "address": "127.0.0.1", "port": host.port}
    host_id = (await rest.ok("POST", "/api/hosts", body, status=201))["id"]
    vm = await rest.ok("POST", "/api/vms", {"name": "vm0", "host": {"id": host_id}}, status=201)
    return str(vm["id"])


async def names(rest: Rest, vm_id: str) -> dict[str, Any]:
    atts = (await rest.ok("GET", f"/api/vms/{vm_id}/diskattachments"))["disk_attachment"]
    return {a["id"]: a.get("logical_name") for a in atts if a["active"]}


def fill(host: HostService, vm_id: str) -> Path:
    """The VM's next state write ends in ENOSPC (its temporary file is /dev/full)."""
    link = host.config.state_dir / "vms" / f".{vm_id}.json.tmp"
    link.symlink_to("/dev/full")
    return link


async def test_a_full_state_dir_refuses_a_plug_and_nothing_is_acknowledged(
    pg_dsn: str, root: Path
) -> None:
    host = a_host(root)
    async with started(host), an_engine(pg_dsn) as rest:
        vm_id = await a_vm(rest, host)
        await wait_until(lambda: _all_named(rest, vm_id, 1), timeout=15, interval=0.02)
        before = host.registry.get(vm_id).state
        fill(host, vm_id)
        path = f"/api/vms/{vm_id}/diskattachments"
        status, body = await rest.call("POST", path, {"interface": "virtio", "active": True})
        assert status == 507, body
        assert body["error"]["code"] == 507 and "disk is full" in body["error"]["message"]
        assert host.registry.get(vm_id).state.devices == before.devices  # undone
        assert len(await names(rest, vm_id)) == 1
        listed = (await rest.ok("GET", path))["disk_attachment"]
        assert len(listed) == 1  # the claim was undone: no attachment, no disk
        # The host has room again (the failed write removed the link): the same works.
        disk = await rest.hotplug(vm_id, "virtio")
        await rest.wait_name(vm_id, disk, timeout=10)


async def test_the_host_refuses_over_json_rpc_with_its_own_code(root: Path) -> None:
    host = a_host(root)
    async with started(host):
        client = await JsonRpcClient.connect("127.0.0.1", host.port)
        try:
            vm_id = "3f8d4c1e-0b1f-4bd4-9c5e-4d4e8f6b2a9a"
            await client.call("VM.create", {"vmId": vm_id, "name": "v", "devices": []})
            hashed = host.registry.get(vm_id).hash
            fill(host, vm_id)
            drive = {"diskId": "0b1f4bd4-9c5e-4d4e-8f6b-2a9a4c1e7d10", "iface": "virtio"}
            with pytest.raises(RpcError) as refused:
                await client.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
            assert refused.value.code == Code.STATE_NOT_WRITTEN
            assert host.registry.get(vm_id).hash == hashed
            [vm] = await client.call("Host.getVMFullList", {"vmList": [vm_id]})
            assert vm["devices"] == []
        finally:
            await client.close()


async def test_a_host_with_a_corrupt_state_file_gets_its_vms_back_from_the_engine(
    pg_dsn: str, root: Path
) -> None:
    first = a_host(root)
    async with an_engine(pg_dsn) as rest:
        async with started(first):
            port = first.port
            vm_id = await a_vm(rest, first)
            disk = await rest.hotplug(vm_id, "virtio")
            await wait_until(lambda: _all_named(rest, vm_id, 2), timeout=15, interval=0.02)
            named = await names(rest, vm_id)
            devices = {d.disk_id: d.device_id for d in first.registry.get(vm_id).devices}
        state = root / "state" / "vms" / f"{vm_id}.json"
        state.write_bytes(b'{"vmId": "not a VM, half a wr')  # a corrupt file
        again = a_host(root, port)
        loop = asyncio.get_running_loop()
        async with started(again):
            back = loop.time()
            assert again.registry.find(vm_id) is None  # the file was moved aside
            await wait_until(lambda: again.registry.find(vm_id), timeout=10, interval=0.01)
            restored = loop.time() - back
            found = {d.disk_id: d.device_id for d in again.registry.get(vm_id).devices}
            assert found == devices and disk in found
            # The guests run again, and name both disks as before.
            await wait_until(lambda: len(again.registry.get(vm_id).mapping) == 2, timeout=15)
            assert await names(rest, vm_id) == named
            converged = loop.time() - back
    print(
        f"VM given back {restored * 1000:.0f} ms after the host restarted,"
        f" its guest naming its disks again at {converged * 1000:.0f} ms"
    )


async def _all_named(rest: Rest, vm_id: str, count: int) -> bool:
    found = await names(rest, vm_id)
    return len(found) == count and all(found.values())
