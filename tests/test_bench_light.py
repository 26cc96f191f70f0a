"""Light guests (bench --guests light): a real host names its VMs' disks with no per-VM socket."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from diskname.bench.light import LightSim
from diskname.host.service import HostConfig, HostService
from diskname.streams import JsonRpcClient

from .conftest import started, wait_until

VM = str(uuid.uuid4())
ROOT = str(uuid.uuid4())


@asynccontextmanager
async def light_host(root: Path, name_delay: float) -> AsyncIterator[JsonRpcClient]:
    cfg = HostConfig(
        listen_port=0,
        state_dir=root / "state",
        channels_dir=root / "ch",
        channel_mode="listen",
        qemu_ga=False,
        agent_channels=False,
    )
    host = HostService(cfg, hypervisor=LightSim(name_delay))
    async with started(host), await JsonRpcClient.connect("127.0.0.1", host.port) as rpc:
        yield rpc


async def names(rpc: JsonRpcClient) -> dict[str, str]:
    """Serial -> the name the guest reports for it."""
    (vm,) = await rpc.call("Host.getVMFullList", {"vmList": [VM]})
    return {serial: entry["name"] for serial, entry in vm["guestDiskMapping"].items()}


async def plug(rpc: JsonRpcClient, iface: str) -> str:
    disk = str(uuid.uuid4())
    await rpc.call("VM.hotplugDisk", {"vmId": VM, "drive": {"diskId": disk, "iface": iface}})
    return disk[:20]


async def test_light_guests_name_disks_as_the_sim_kernel_with_no_socket_per_vm(
    short_dir: Path,
) -> None:
    async with light_host(short_dir, name_delay=0.01) as rpc:
        devices = [{"diskId": ROOT, "iface": "virtio"}]
        await rpc.call("VM.create", {"vmId": VM, "name": "light", "devices": devices})
        await wait_until(lambda: names(rpc))
        assert await names(rpc) == {ROOT[:20]: "/dev/vda"}
        ifaces = ("virtio", "nvme", "sata", "virtio_scsi")
        plugged = {iface: await plug(rpc, iface) for iface in ifaces}
        await wait_until(lambda: _count(rpc, 5))
        assert await names(rpc) == {
            ROOT[:20]: "/dev/vda",
            plugged["virtio"]: "/dev/vdb",
            plugged["nvme"]: "/dev/nvme0n1",
            plugged["sata"]: "/dev/sda",
            plugged["virtio_scsi"]: "/dev/sdb",
        }
        disk = await rpc.call("Host.getVMFullList", {"vmList": [VM]})
        sata = next(d["diskId"] for d in disk[0]["devices"] if d["iface"] == "sata")
        await rpc.call("VM.hotunplugDisk", {"vmId": VM, "diskId": sata})
        assert plugged["sata"] not in await names(rpc)  # gone with the unplug, at once
        again = await plug(rpc, "sata")
        await wait_until(lambda: _count(rpc, 5))
        assert (await names(rpc))[again] == "/dev/sda"  # the lowest free letter
        stats = await rpc.call("Host.getAllVmStats")
        # No agent channel: the hypervisor speaks for its guest, up from its first report.
        assert stats[0]["agent"]["status"] == "up"
        assert stats[0]["agent"]["sources"] == ["agent"]
    assert list((short_dir / "ch").iterdir()) == []  # no channel, no hardware port


async def test_a_light_guest_names_a_plugged_disk_only_after_its_delay(short_dir: Path) -> None:
    async with light_host(short_dir, name_delay=3600) as rpc:
        devices = [{"diskId": ROOT, "iface": "virtio"}]
        await rpc.call("VM.create", {"vmId": VM, "name": "slow", "devices": devices})
        await plug(rpc, "virtio")
        (vm,) = await rpc.call("Host.getVMFullList", {"vmList": [VM]})
        assert len(vm["devices"]) == 2
        assert await names(rpc) == {ROOT[:20]: "/dev/vda"}  # booted with it; the new one waits


async def test_light_guests_come_back_named_after_a_host_restart(short_dir: Path) -> None:
    async with light_host(short_dir, name_delay=0.01) as rpc:
        devices = [{"diskId": ROOT, "iface": "virtio"}]
        await rpc.call("VM.create", {"vmId": VM, "name": "again", "devices": devices})
        extra = await plug(rpc, "virtio")
        await wait_until(lambda: _count(rpc, 2))
    async with light_host(short_dir, name_delay=0.01) as rpc:
        await wait_until(lambda: _count(rpc, 2))
        assert await names(rpc) == {ROOT[:20]: "/dev/vda", extra: "/dev/vdb"}


async def _count(rpc: JsonRpcClient, n: int) -> Any:
    return len(await names(rpc)) == n
