"""The host's Inventory as the libvirt backend uses it, on a real HostService; and the
message when libvirt-python is missing.

What the backend needs beyond the first seam: a VM's status (a stopped domain is
``Down``), the agent channel following the domain when a restart moves its socket,
and the list of VMs the host holds (so a resync can tell which domains went away
while the host was not looking). The host runs in ``listen`` mode here, so the
channel's socket shows where the host serves it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from diskname.host.devices import Device
from diskname.host.vm import AGENT
from diskname.streams import JsonRpcClient

from .conftest import running_host, wait_until

VM = "f20348af-d2e6-4c20-964d-d7e9c95b4c41"
ROOT = Device(
    device_id="4ba3cf61-37cd-513c-ba36-60b70ad7db45",
    disk_id="ebd59569-29f1-57c2-8343-a75345e14140",
    serial="rootserial0123456789",
    iface="virtio",
    address="0000:04:00.0",
)


async def test_a_found_vm_has_its_status_and_its_channel_follows_the_domain(
    short_dir: Path,
) -> None:
    first, moved = short_dir / "domain-1.sock", short_dir / "domain-2.sock"
    async with running_host(short_dir) as host:
        await host.vm_found(VM, "dnx1", [ROOT], first, "Up")
        assert host.vm_ids() == {VM}
        await wait_until(first.exists)
        async with await JsonRpcClient.connect("127.0.0.1", host.port) as rpc:
            (stats,) = await rpc.call("Host.getAllVmStats")
            assert stats["status"] == "Up"
            host.guest_mapping(VM, AGENT, {"rootserial0123456789": {"name": "/dev/vda"}})
            await host.vm_found(VM, "dnx1", [ROOT], None, "Down")  # shut off
            (full,) = await rpc.call("Host.getVMFullList")
            assert full["status"] == "Down"
            await host.vm_found(VM, "dnx1", [ROOT], moved, "Up")  # started again
            await wait_until(moved.exists)
            assert not first.exists()
            (stats,) = await rpc.call("Host.getAllVmStats")
            assert stats["status"] == "Up"
    async with running_host(short_dir) as host:  # the status survives a restart
        assert host.registry.get(VM).state.status == "Up"
        await host.vm_gone(VM)
        assert host.vm_ids() == frozenset()


async def test_guest_input_a_backend_drops_is_counted_with_the_vm(short_dir: Path) -> None:
    async with running_host(short_dir) as host:
        await host.vm_found(VM, "dnx1", [ROOT], None, "Up")
        host.guest_rejected(VM, "qga_bad_guest_info")
        host.guest_rejected("not-a-vm-of-this-host", "qga_bad_guest_info")  # ignored
        async with await JsonRpcClient.connect("127.0.0.1", host.port) as rpc:
            stats = await rpc.call("Host.getVmStats", {"vmId": VM})
            assert stats["rejected"] == {"qga_bad_guest_info": 1}


def test_libvirt_without_libvirt_python_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['libvirt'] = None; from diskname.__main__ import main; "
        f"sys.exit(main(['host', '--hypervisor', 'libvirt', '--state-dir', '{tmp_path}']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "pip install 'diskname[libvirt]'" in lines[0] and "libvirt-dev" in lines[0]
