"""``host --hypervisor qemu`` against a real QEMU with no guest (-S): JSON-RPC in, QMP out.

No boot needed: a stopped q35 machine accepts blockdev-add and device_add on
its pcie-root-ports and releases SCSI disks without a guest. A second QMP
monitor lets the test look at QEMU while the host holds the first.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from diskname.host.devices import Device
from diskname.host.hypervisors.qemu import bus_is_empty, qdev_id, qmp_path, root_ports
from diskname.host.qmp_client import QmpClient
from diskname.host.service import HostConfig, HostService
from diskname.host.vm import QEMU_GA
from diskname.protocol.host_wire import Code
from diskname.streams import JsonRpcClient, RpcError

from .conftest import started, wait_until
from .vm.qemu import bare_machine, have_qemu, running

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(not have_qemu(), reason="qemu-system-x86_64/qemu-img not installed"),
]


def qid(device: dict[str, Any]) -> str:
    """The QEMU id of a device as JSON-RPC returned it."""
    return qdev_id(Device.from_json(device))


@dataclass
class Rig:
    rpc: JsonRpcClient
    inspect: QmpClient
    vm: str
    state: Path
    host: HostService

    async def plug(self, iface: str, disk: str | None = None) -> dict[str, Any]:
        drive = {"diskId": disk or str(uuid.uuid4()), "iface": iface}
        device: dict[str, Any] = await self.rpc.call(
            "VM.hotplugDisk", {"vmId": self.vm, "drive": drive}, timeout=30
        )
        return device

    async def devices(self) -> list[dict[str, Any]]:
        (full,) = await self.rpc.call("Host.getVMFullList", {"vmList": [self.vm]})
        return list(full["devices"])

    async def qemu_devices(self) -> dict[str, str]:
        """id -> type of every device QEMU has that was given an id."""
        found = await self.inspect.execute("qom-list", {"path": "/machine/peripheral"})
        return {p["name"]: p["type"] for p in found if p["type"].startswith("child<")}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    with tempfile.TemporaryDirectory(prefix="dnh") as tmp:
        base = Path(tmp)
        channels, vm = base / "ch", str(uuid.uuid4())
        channels.mkdir()
        inspect_path = base / "inspect.qmp"
        args = bare_machine(qmp_path(channels, vm), inspect_path)
        config = HostConfig(
            listen_port=0,
            state_dir=base / "state",
            channels_dir=channels,
            hypervisor="qemu",
            qemu_ga=False,
        )
        host = HostService(config)
        async with (
            running(args, base / "qemu.log", inspect_path),
            started(host),
            await JsonRpcClient.connect("127.0.0.1", host.port) as rpc,
            await QmpClient.connect(inspect_path) as inspect,
        ):
            await rpc.call("VM.create", {"vmId": vm, "name": "bare", "devices": []})
            yield Rig(rpc, inspect, vm, config.state_dir, host)


async def test_virtio_and_nvme_disks_land_on_free_root_ports_with_the_serial(rig: Rig) -> None:
    disks = [str(uuid.uuid4()) for _ in range(3)]
    devices = [
        await rig.plug(iface, d)
        for iface, d in zip(("virtio", "virtio", "nvme"), disks, strict=True)
    ]
    qemu = await rig.qemu_devices()
    for device in devices:
        assert qemu[qid(device)] in ("child<virtio-blk-pci>", "child<nvme>")
        assert (rig.state / "images" / f"{device['diskId']}.qcow2").is_file()
    serials = [
        await rig.inspect.execute(
            "qom-get", {"path": f"/machine/peripheral/{qid(d)}", "property": "serial"}
        )
        for d in devices
    ]
    assert serials == [d[:20] for d in disks]
    # Each disk sits behind its own root port: three ports are taken now.
    peripherals = await rig.inspect.execute("qom-list", {"path": "/machine/peripheral"})
    ports = root_ports(peripherals)
    assert ports[:3] == ["rp1", "rp2", "rp3"] and len(ports) == 8
    buses = [
        await rig.inspect.execute("qom-list", {"path": f"/machine/peripheral/{p}/{p}"})
        for p in ports
    ]
    assert [bus_is_empty(b) for b in buses] == [False] * 3 + [True] * 5
    assert [d["diskId"] for d in await rig.devices()] == disks


async def test_scsi_unplug_waits_for_device_deleted_then_frees_the_node(rig: Rig) -> None:
    disk = str(uuid.uuid4())
    device = await rig.plug("virtio_scsi", disk)
    assert (await rig.qemu_devices())[qid(device)] == "child<scsi-hd>"
    assert await rig.rpc.call("VM.hotunplugDisk", {"vmId": rig.vm, "diskId": disk}, timeout=30)
    assert qid(device) not in await rig.qemu_devices()
    nodes = await rig.inspect.execute("query-named-block-nodes")
    assert not [n for n in nodes if n["node-name"].startswith("dn")]
    assert await rig.devices() == []
    # Plugged again: the same image, a new device.
    again = await rig.plug("virtio_scsi", disk)
    assert again["deviceId"] != device["deviceId"]
    assert qid(again) in await rig.qemu_devices()


async def test_qemus_refusal_is_a_json_rpc_error_and_changes_nothing(rig: Rig) -> None:
    await rig.plug("virtio")
    (before,) = await rig.rpc.call("Host.getAllVmStats")
    with pytest.raises(RpcError) as info:
        await rig.plug("sata")  # q35's AHCI bus cannot hot-plug
    assert info.value.code == Code.HYPERVISOR_ERROR
    assert "hotplug" in info.value.message.lower()
    (after,) = await rig.rpc.call("Host.getAllVmStats")
    assert after["hash"] == before["hash"]
    assert len(await rig.devices()) == 1
    nodes = await rig.inspect.execute("query-named-block-nodes")
    assert len([n for n in nodes if n["node-name"].startswith("dn")]) == 1  # sata's node is gone


async def test_a_vm_whose_qemu_is_not_running_answers_a_hypervisor_error(rig: Rig) -> None:
    other = str(uuid.uuid4())
    await rig.rpc.call("VM.create", {"vmId": other, "name": "no-qemu", "devices": []})
    with pytest.raises(RpcError) as info:
        await rig.rpc.call(
            "VM.hotplugDisk",
            {"vmId": other, "drive": {"diskId": str(uuid.uuid4()), "iface": "virtio"}},
        )
    assert info.value.code == Code.HYPERVISOR_ERROR
    assert "cannot reach QEMU" in info.value.message
    (full,) = await rig.rpc.call("Host.getVMFullList", {"vmList": [other]})
    assert full["devices"] == []


async def test_unplugging_a_disk_qemu_never_had_succeeds(rig: Rig) -> None:
    disk = str(uuid.uuid4())
    await rig.rpc.call(
        "VM.create",
        {"vmId": str(uuid.uuid4()), "name": "x", "devices": []},
    )
    device = await rig.plug("virtio_scsi", disk)
    await rig.inspect.execute("device_del", {"id": qid(device)})

    async def gone() -> bool:
        return qid(device) not in await rig.qemu_devices()

    await wait_until(gone, timeout=10)
    assert await rig.rpc.call("VM.hotunplugDisk", {"vmId": rig.vm, "diskId": disk}, timeout=30)
    assert await rig.devices() == []


async def test_a_guest_reset_qemu_reports_makes_the_vms_names_stale(rig: Rig) -> None:
    """QMP ``RESET`` (here ``system_reset``; a guest reboot alike): the host drops the
    VM's guest mappings, keeps the names, and its guest agent is not up (SPEC §17)."""
    vm = rig.host.registry.get(rig.vm)
    mapping = {"serialA0123456789012": {"name": "/dev/vdb", "serial": "serialA0123456789012"}}
    rig.host.guest_mapping(rig.vm, QEMU_GA, mapping)
    assert vm.agent_status() == "up" and vm.sources == {QEMU_GA: mapping}
    await rig.inspect.execute("system_reset")
    await wait_until(lambda: vm.agent_status() == "unresponsive", timeout=10, interval=0.02)
    assert vm.sources == {} and vm.mapping == mapping  # kept, stale
    rig.host.guest_mapping(rig.vm, QEMU_GA, mapping)  # the first report of the new boot
    assert vm.agent_status() == "up"
