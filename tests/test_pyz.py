"""diskname-agent.pyz: the agent alone in one file, run by a bare interpreter.

``python -S`` sees the standard library only (no orjson, no pyudev, no
aiohttp): the archive must bring everything else the agent needs, fall back
to the json module, and name a real hot-plug through a real host.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from diskname.pyz import build

from .conftest import running_host, wait_until
from .guest_procs import agent_log, agent_processes
from .test_host_with_agent import engine, new_id


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "diskname-agent.pyz"
    build(out)
    return out


def bare(pyz: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-S", str(pyz), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_archive_holds_the_agent_and_nothing_else(pyz: Path) -> None:
    names = zipfile.ZipFile(pyz).namelist()
    assert "__main__.py" in names
    for needed in ("agent/service.py", "agent/sources/udev.py", "protocol/agent_wire.py"):
        assert f"diskname/{needed}" in names
    assert "diskname/compat/_stdjson.py" in names
    sources = {n for n in names if n.startswith("diskname/") and n.endswith(".py")}
    assert {n + "c" for n in sources} <= set(names)  # compiled by this Python, beside each
    for absent in ("host/", "engine/", "bench/", "dev.py", "pgembed.py", "pyz.py"):
        assert not [n for n in names if n.startswith(f"diskname/{absent}")], absent
    assert pyz.read_bytes().startswith(b"#!/usr/bin/python3\n")
    assert pyz.stat().st_mode & 0o777 == 0o755


def test_the_same_sources_build_the_same_bytes(pyz: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.pyz"
    assert build(again) == pyz.stat().st_size
    assert again.read_bytes() == pyz.read_bytes()


def test_the_archive_runs_on_the_standard_library_alone(pyz: Path) -> None:
    version = bare(pyz, "--version")
    assert version.returncode == 0 and version.stdout.startswith("diskname "), version
    cfg = bare(pyz, "config", "agent")
    assert cfg.returncode == 0, cfg.stderr
    assert '"source": "udev"' in cfg.stdout


@pytest.mark.parametrize(
    ("command", "install"),
    [
        ("host", "pip install 'diskname[host]'"),
        ("engine", "pip install 'diskname[engine]'"),
        ("dev", "pip install 'diskname[all]'"),
        ("bench", "pip install 'diskname[all]'"),
        ("agent-pyz", "pip install diskname"),
        ("pki init --dir /nonexistent", "pip install 'diskname[engine]'"),
    ],
)
def test_other_commands_say_they_are_not_in_the_archive(
    pyz: Path, command: str, install: str
) -> None:
    out = bare(pyz, *command.split())
    assert (out.returncode, out.stderr) == (
        2,
        f"diskname: {command.split()[0]} is not in this agent-only build: {install}\n",
    )


def test_the_udev_source_without_pyudev_is_one_line(pyz: Path) -> None:
    out = bare(pyz, "agent", "--once")
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("diskname: libudev is not available"), out.stderr
    assert "install python3-pyudev" in last


async def test_a_hot_plug_is_named_by_the_archive_on_stdlib_json(
    pyz: Path, short_dir: Path
) -> None:
    toml = short_dir / "agent.toml"
    toml.write_text("[agent]\nheartbeat_interval = 5.0  # the small TOML reader is not used here\n")

    def command(channel: Path, hw: Path) -> list[str]:
        return [
            sys.executable, "-S", str(pyz), "agent", "--config", str(toml), "--source", "sim",
            "--connect", f"unix:{channel}", "--sim-hw", f"unix:{hw}", "--log-level", "DEBUG",
        ]  # fmt: skip

    vm_id, root, data = new_id(), new_id(), new_id()
    async with running_host(short_dir, agent_processes(command)) as host, engine(host) as eng:
        await eng.create(vm_id, root)
        assert await eng.name_of(vm_id, root[:20]) == "/dev/vda"
        drive = {"diskId": data, "iface": "virtio_scsi"}
        await eng.rpc.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
        assert await wait_until(lambda: eng.name_of(vm_id, data[:20])) == "/dev/sda"
        await eng.rpc.call("VM.hotunplugDisk", {"vmId": vm_id, "diskId": data})

        async def forgotten() -> bool:
            return await eng.name_of(vm_id, data[:20]) is None

        await wait_until(forgotten)
    log = agent_log(short_dir / "ch", vm_id)
    assert "JSON by json" in log, log
