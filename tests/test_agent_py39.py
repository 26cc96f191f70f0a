"""The agent on the oldest Python it supports, as a guest has it: Debian 11's python3 3.9.

diskname-agent.pyz runs in a Debian 11 root (tests/debian11.py) with the
distribution's python3-pyudev (0.22) and no orjson: its udev source reads
this machine's real /sys, and its sim source names a hot-plug through a real
host over a UNIX socket, with its configuration read by the small TOML
reader (Debian 11 has neither tomllib nor tomli).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from diskname.pyz import build

from . import debian11
from .conftest import running_host, wait_until
from .guest_procs import agent_log, agent_processes
from .test_host_with_agent import engine, new_id

pytestmark = [pytest.mark.timeout(300)]
SKIP = debian11.skip_reason()
if SKIP:
    pytestmark.append(pytest.mark.skip(reason=SKIP))


@pytest.fixture(scope="module")
def root() -> Path:
    built, _ = debian11.ensure_root()
    return built


@pytest.fixture
def share(short_dir: Path) -> Path:
    """What the Debian 11 root sees as /mnt/dn: the archive and the channel sockets."""
    build(short_dir / "diskname-agent.pyz")
    return short_dir


def in_root(root: Path, share: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["python3", "/mnt/dn/diskname-agent.pyz", *args]
    return subprocess.run(
        debian11.chroot_command(root, argv, {share: "/mnt/dn"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_root_has_python_3_9_and_pyudev_but_no_orjson(root: Path, share: Path) -> None:
    code = (
        "import sys, importlib.util as u; "
        "print(sys.version_info[:2], u.find_spec('pyudev') is not None, "
        "u.find_spec('orjson') is None, u.find_spec('tomllib') is None)"
    )
    out = subprocess.run(
        debian11.chroot_command(root, ["python3", "-c", code], {}),
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "(3, 9) True True True"


def test_the_udev_source_prints_the_machines_disks(root: Path, share: Path) -> None:
    out = in_root(root, share, "agent", "--once", "--print")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {"mapping", "disks"}
    assert all(entry["name"].startswith("/dev/") for entry in report["mapping"].values())
    assert "on Python 3.9" in out.stderr and "JSON by json" in out.stderr


def test_the_other_tiers_ask_for_python_3_11(root: Path, share: Path) -> None:
    out = in_root(root, share, "engine")
    assert out.returncode == 2
    assert out.stderr.startswith("diskname: engine needs Python 3.11+ (this is 3.9.")


async def test_a_hot_plug_is_named_by_the_agent_on_python_3_9(root: Path, share: Path) -> None:
    (share / "agent.toml").write_text(
        "# read by diskname.compat.toml: no tomllib here\n[agent]\nheartbeat_interval = 2.5\n"
    )

    def command(channel: Path, hw: Path) -> list[str]:
        inside = Path("/mnt/dn") / channel.relative_to(share)
        hw_inside = Path("/mnt/dn") / hw.relative_to(share)
        argv = [
            "python3", "/mnt/dn/diskname-agent.pyz", "agent", "--config", "/mnt/dn/agent.toml",
            "--source", "sim", "--connect", f"unix:{inside}", "--sim-hw", f"unix:{hw_inside}",
            "--log-level", "DEBUG",
        ]  # fmt: skip
        return debian11.chroot_command(root, argv, {share: "/mnt/dn"})

    vm_id, root_disk, data = new_id(), new_id(), new_id()
    async with running_host(share, agent_processes(command)) as host, engine(host) as eng:
        await eng.create(vm_id, root_disk)
        drive = {"diskId": data, "iface": "nvme"}
        await eng.rpc.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
        assert await wait_until(lambda: eng.name_of(vm_id, data[:20]), timeout=20) == (
            "/dev/nvme0n1"
        )
        (stats,) = await eng.rpc.call("Host.getAllVmStats")
        agent = stats["agent"]
        assert (agent["status"], agent["apiVersion"], agent["sources"]) == ("up", 3, ["agent"])
    log = agent_log(share / "ch", vm_id)
    assert "on Python 3.9" in log and "JSON by json" in log, log
