"""Host and simulated guests together in one event loop, over real sockets.

The JSON-RPC client plays the engine; the guests run the real agent code on
the sim source, started by the host's guest launcher as dev mode does.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from diskname.agent.service import AgentConfig, AgentService
from diskname.host.service import GuestLauncher, HostService
from diskname.protocol import jsonrpc
from diskname.streams import JsonRpcClient

from .conftest import running_host, wait_until


def sim_guests(
    name_delay: float = 0.0, started: list[str] | None = None, stopped: list[str] | None = None
) -> GuestLauncher:
    """A guest launcher like dev mode's: the real agent on the sim source."""

    async def launch(vm_id: str, channel: Path, hw: Path) -> None:
        if started is not None:
            started.append(vm_id)
        config = AgentConfig(
            connect=f"unix:{channel}", source="sim", sim_hw=f"unix:{hw}", name_delay=name_delay
        )
        try:
            await AgentService(config).run()
        finally:
            if stopped is not None:
                stopped.append(vm_id)

    return launch


class Engine:
    """The engine's side of the host, as far as these tests need it."""

    def __init__(self, rpc: JsonRpcClient, notes: list[jsonrpc.Notification]) -> None:
        self.rpc, self.notes = rpc, notes

    async def full(self, vm_id: str) -> dict[str, Any]:
        (vm,) = await self.rpc.call("Host.getVMFullList", {"vmList": [vm_id]})
        return dict(vm)

    async def name_of(self, vm_id: str, serial: str) -> str | None:
        entry = (await self.full(vm_id))["guestDiskMapping"].get(serial)
        return None if entry is None else str(entry["name"])

    def notified(self, vm_id: str, vm_hash: str) -> bool:
        return {"vmId": vm_id, "hash": vm_hash} in [n.params for n in self.notes]

    async def create(self, vm_id: str, root: str) -> None:
        await self.rpc.call(
            "VM.create",
            {"vmId": vm_id, "name": "guest", "devices": [{"diskId": root, "iface": "virtio"}]},
        )
        await wait_until(lambda: self.name_of(vm_id, root[:20]))


@contextlib.asynccontextmanager
async def engine(host: HostService) -> AsyncIterator[Engine]:
    notes: list[jsonrpc.Notification] = []
    async with await JsonRpcClient.connect(
        "127.0.0.1", host.port, on_notification=notes.append
    ) as rpc:
        yield Engine(rpc, notes)


def new_id() -> str:
    return str(uuid.uuid4())


async def test_a_hotplug_is_named_by_the_guest_and_notified(short_dir: Path) -> None:
    vm_id, root, data = new_id(), new_id(), new_id()
    async with running_host(short_dir, sim_guests()) as host, engine(host) as eng:
        await eng.create(vm_id, root)
        assert await eng.name_of(vm_id, root[:20]) == "/dev/vda"
        before = (await eng.full(vm_id))["hash"]
        await eng.rpc.call(
            "VM.hotplugDisk", {"vmId": vm_id, "drive": {"diskId": data, "iface": "virtio_scsi"}}
        )
        assert await wait_until(lambda: eng.name_of(vm_id, data[:20])) == "/dev/sda"
        full = await eng.full(vm_id)
        assert full["hash"] != before
        assert full["guestDiskMapping"][data[:20]]["bus"] == "virtio_scsi"
        assert full["guestDiskMapping"][data[:20]]["address"] == "0:0:0:0"
        await wait_until(lambda: eng.notified(vm_id, full["hash"]))
        (stats,) = await eng.rpc.call("Host.getAllVmStats")
        agent = stats["agent"]
        assert (agent["status"], agent["apiVersion"], agent["sources"]) == ("up", 3, ["agent"])


async def test_the_device_shows_before_the_guest_names_it(short_dir: Path) -> None:
    vm_id, root, data = new_id(), new_id(), new_id()
    loop = asyncio.get_running_loop()
    async with running_host(short_dir, sim_guests(name_delay=0.4)) as host, engine(host) as eng:
        await eng.create(vm_id, root)
        plugged_at = loop.time()
        await eng.rpc.call(
            "VM.hotplugDisk", {"vmId": vm_id, "drive": {"diskId": data, "iface": "nvme"}}
        )
        early = await eng.full(vm_id)
        assert data in [d["diskId"] for d in early["devices"]]
        assert data[:20] not in early["guestDiskMapping"]
        assert eng.notified(vm_id, early["hash"])  # the device alone changed the hash
        assert await wait_until(lambda: eng.name_of(vm_id, data[:20])) == "/dev/nvme0n1"
        assert loop.time() - plugged_at >= 0.4
        late = await eng.full(vm_id)
        assert late["hash"] != early["hash"]
        await wait_until(lambda: eng.notified(vm_id, late["hash"]))


async def test_a_quick_unplug_and_replug_still_changes_the_hash(short_dir: Path) -> None:
    vm_id, root, data = new_id(), new_id(), new_id()
    drive = {"diskId": data, "deviceId": new_id(), "iface": "virtio"}
    async with running_host(short_dir, sim_guests()) as host, engine(host) as eng:
        await eng.create(vm_id, root)
        await eng.rpc.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
        await wait_until(lambda: eng.name_of(vm_id, data[:20]))
        before = await eng.full(vm_id)
        await eng.rpc.call("VM.hotunplugDisk", {"vmId": vm_id, "diskId": data})
        await eng.rpc.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})

        async def renamed() -> bool:
            entry = (await eng.full(vm_id))["guestDiskMapping"].get(data[:20], {})
            return bool(entry.get("diskseq", 0) > before["guestDiskMapping"][data[:20]]["diskseq"])

        await wait_until(renamed)
        after = await eng.full(vm_id)
        assert after["devices"] == before["devices"]  # same device, same address
        assert after["guestDiskMapping"][data[:20]]["name"] == "/dev/vdb"
        assert after["hash"] != before["hash"]


async def test_the_agent_reconnects_when_the_host_restarts(short_dir: Path) -> None:
    vm_id, root = new_id(), new_id()
    async with running_host(short_dir) as host:
        await host.create_vm(vm_id, "guest", [{"diskId": root, "iface": "virtio"}])
        channel = host.config.channels_dir / f"{vm_id}.ovirt-guest-agent.0"
        hw = host.config.channels_dir / f"{vm_id}.sim-hw"
        agent = AgentService(
            AgentConfig(connect=f"unix:{channel}", source="sim", sim_hw=f"unix:{hw}")
        )
        guest = asyncio.create_task(agent.run())
        vm = host.registry.get(vm_id)
        await wait_until(lambda: root[:20] in vm.mapping)
    try:
        assert agent.connections == 1
        async with running_host(short_dir) as host:
            vm = host.registry.get(vm_id)
            assert root[:20] in vm.mapping  # from the state dir
            await wait_until(lambda: host.agent_status(vm) == "up")
            assert agent.connections == 2
            data = new_id()
            await host.hotplug(vm_id, {"diskId": data, "iface": "sata"})
            await wait_until(lambda: data[:20] in vm.mapping)
    finally:
        guest.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await guest


async def test_guests_start_with_their_vms_and_stop_on_destroy(short_dir: Path) -> None:
    started: list[str] = []
    stopped: list[str] = []
    keep, drop = new_id(), new_id()
    launcher = sim_guests(started=started, stopped=stopped)
    async with running_host(short_dir, launcher) as host, engine(host) as eng:
        await eng.create(keep, new_id())
        await eng.create(drop, new_id())
        assert await eng.rpc.call("VM.destroy", {"vmId": drop}) is True
        assert stopped == [drop]
        assert not (host.config.channels_dir / f"{drop}.sim-hw").exists()
    assert sorted(stopped) == sorted([drop, keep])
    started.clear()
    async with running_host(short_dir, launcher) as host:
        assert started == [keep]  # recovered from the state dir, guest and all
        vm = host.registry.get(keep)
        await wait_until(lambda: host.agent_status(vm) == "up")
