"""qemu-guest-agent as a second source: a real qemu-ga, and a scripted one for the odd cases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from diskname.host.qga import qga_path
from diskname.host.vm import QEMU_GA, Vm
from diskname.protocol import jsonrpc
from diskname.streams import JsonRpcClient, close_writer

from .conftest import running_host, wait_until

QEMU_GA_BIN = shutil.which("qemu-ga") or shutil.which("qemu-ga", path="/usr/sbin:/usr/bin")


@contextlib.asynccontextmanager
async def real_qemu_ga(socket_path: Path, work: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real qemu-ga serving ``socket_path``, as QEMU's chardev would."""
    assert QEMU_GA_BIN is not None
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        QEMU_GA_BIN,
        "--method",
        "unix-listen",
        "--path",
        str(socket_path),
        "--pidfile",
        str(work / "qga.pid"),
        "--statedir",
        str(work),
        "--logfile",
        str(work / "qga.log"),
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(socket_path.exists)
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        await proc.wait()


needs_qemu_ga = pytest.mark.skipif(
    QEMU_GA_BIN is None,
    reason="qemu-ga is not installed (Debian package qemu-guest-agent; CI installs it)",
)


def machine_disks() -> set[str]:
    return {f"/dev/{name}" for name in os.listdir("/sys/block")}


@needs_qemu_ga
async def test_a_real_qemu_ga_gives_a_mapping_with_the_machines_disks(short_dir: Path) -> None:
    vm_id = str(uuid.uuid4())
    notes: list[jsonrpc.Notification] = []
    async with running_host(short_dir, channel_mode="connect") as host:
        async with await JsonRpcClient.connect(
            "127.0.0.1", host.port, on_notification=notes.append
        ) as c:
            created = await c.call("VM.create", {"vmId": vm_id, "name": "real-qga"})
            path = qga_path(host.config.channels_dir, vm_id)
            async with real_qemu_ga(path, short_dir / "qga"):
                vm = host.registry.get(vm_id)
                await wait_until(lambda: vm.sources.get(QEMU_GA), timeout=15)
                (full,) = await c.call("Host.getVMFullList", {"vmList": [vm_id]})
        mapping = full["guestDiskMapping"]
        names = {entry["name"] for entry in mapping.values()}
        assert names and names <= machine_disks(), mapping
        assert all(entry["source"] == "qemu-ga" for entry in mapping.values())
        # Without a udev database qemu-ga reports no serials (FACTS §6): keyed by address.
        for key, entry in mapping.items():
            assert "serial" in entry or key.startswith(("address:", "name:"))
        assert full["hash"] != created["hash"]
        assert {"vmId": vm_id, "hash": full["hash"]} in [n.params for n in notes]
        assert not any(reason.startswith("qga_") for reason in vm.rejected)


@needs_qemu_ga
async def test_a_hotplug_asks_qemu_ga_again_and_a_restarted_qemu_ga_is_resynced(
    short_dir: Path,
) -> None:
    vm_id = str(uuid.uuid4())
    # A long period: only hot-plugs and reconnects cause queries here.
    async with running_host(short_dir, channel_mode="connect", qga_interval=3600.0) as host:
        vm = await host.create_vm(vm_id, "qga", [])
        channel = host._running[vm_id].qga
        assert channel is not None
        path = qga_path(host.config.channels_dir, vm_id)
        async with real_qemu_ga(path, short_dir / "qga"):
            await wait_until(lambda: channel.queries == 1, timeout=15)
            await host.hotplug(vm_id, {"diskId": str(uuid.uuid4()), "iface": "virtio"})
            await wait_until(lambda: channel.queries >= 3, timeout=15)
        await wait_until(lambda: not channel.connected.is_set())
        before = channel.queries
        async with real_qemu_ga(path, short_dir / "qga"):
            await wait_until(lambda: channel.queries > before, timeout=15)
        assert vm.sources[QEMU_GA]


# -- a scripted qemu-ga, for what a real one will not do ----------------------

Reply = Callable[[dict[str, Any]], Awaitable[bytes]]


@contextlib.asynccontextmanager
async def fake_qemu_ga(path: Path, reply: Reply) -> AsyncIterator[list[str]]:
    """Serve ``path``; answer each command line with ``reply(command)``. Yields the commands."""
    seen: list[str] = []
    writers: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                cmd = orjson.loads(line.lstrip(b"\xff"))
                seen.append(cmd["execute"])
                writer.write(await reply(cmd))
                await writer.drain()

    server = await asyncio.start_unix_server(serve, str(path))
    try:
        yield seen
    finally:
        server.close()
        for writer in writers:
            await close_writer(writer)


def answer(value: Any) -> bytes:
    return orjson.dumps({"return": value}) + b"\n"


def sync_reply(cmd: dict[str, Any]) -> bytes:
    # Stale bytes from "an earlier client" before the sentinel, a stale reply after it.
    return b'{"return": [{"na' + b"\xff" + answer(123456789) + answer(cmd["arguments"]["id"])


FSINFO = [
    {
        "name": "nvme0n1p1",
        "mountpoint": "/",
        "disk": [
            {
                "bus-type": "nvme",
                "dev": "/dev/nvme0n1p1",
                "pci-controller": {"domain": 0, "bus": 0, "slot": 5, "function": 0},
            }
        ],
    }
]


async def test_an_old_qemu_ga_is_asked_for_fsinfo_instead(short_dir: Path) -> None:
    async def old(cmd: dict[str, Any]) -> bytes:
        match cmd["execute"]:
            case "guest-sync-delimited":
                return sync_reply(cmd)
            case "guest-get-fsinfo":
                return answer(FSINFO)
        error = {"class": "CommandNotFound", "desc": "The command was not found"}
        return orjson.dumps({"error": error}) + b"\n"

    async with running_host(short_dir, channel_mode="connect") as host:
        vm = await host.create_vm(str(uuid.uuid4()), "old", [])
        async with fake_qemu_ga(qga_path(host.config.channels_dir, vm.id), old) as seen:
            await wait_until(lambda: vm.mapping)
        assert seen[:3] == ["guest-sync-delimited", "guest-get-disks", "guest-get-fsinfo"]
        assert vm.mapping == {
            "address:0000:00:05.0": {
                "name": "/dev/nvme0n1",
                "source": "qemu-ga",
                "bus": "nvme",
                "address": "0000:00:05.0",
                "mountpoints": ["/"],
                "partitions": ["/dev/nvme0n1p1"],
            }
        }


async def test_a_hostile_qemu_ga_is_counted_and_the_host_reconnects(short_dir: Path) -> None:
    replies = iter([b"garbage that is not json\n", answer({"not": "a list"})])

    async def hostile(cmd: dict[str, Any]) -> bytes:
        if cmd["execute"] == "guest-sync-delimited":
            return sync_reply(cmd)
        return next(replies, answer([{"name": "/dev/vdb", "partition": False}]))

    async with running_host(short_dir, channel_mode="connect", qga_interval=0.1) as host:
        vm = await host.create_vm(str(uuid.uuid4()), "hostile", [])
        bystander = await host.create_vm(str(uuid.uuid4()), "bystander", [])
        async with fake_qemu_ga(qga_path(host.config.channels_dir, vm.id), hostile):
            await wait_until(lambda: vm.mapping, timeout=10)
        assert vm.rejected == {"qga_invalid_json": 1, "qga_bad_reply": 1}
        assert vm.mapping == {"name:/dev/vdb": {"name": "/dev/vdb", "source": "qemu-ga"}}
        assert bystander.rejected == {} and bystander.mapping == {}


async def test_without_qemu_ga_no_channel_runs(short_dir: Path) -> None:
    async with running_host(short_dir, channel_mode="connect", qemu_ga=False) as host:
        vm: Vm = await host.create_vm(str(uuid.uuid4()), "plain", [])
        assert host._running[vm.id].qga is None


async def test_a_silent_qemu_ga_is_asked_again_on_the_same_connection(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("diskname.host.qga.REPLY_TIMEOUT", 0.2)
    syncs: list[int] = []

    async def late(cmd: dict[str, Any]) -> bytes:
        if cmd["execute"] == "guest-sync-delimited":
            syncs.append(cmd["arguments"]["id"])
            # qemu-ga not running yet: the first sync goes unanswered.
            return sync_reply(cmd) if len(syncs) > 1 else b""
        return answer([{"name": "/dev/vda", "partition": False}])

    async with running_host(short_dir, channel_mode="connect") as host:
        vm = await host.create_vm(str(uuid.uuid4()), "late", [])
        async with fake_qemu_ga(qga_path(host.config.channels_dir, vm.id), late):
            await wait_until(lambda: vm.mapping)
        assert len(syncs) == 2 and syncs[0] != syncs[1]
        assert vm.rejected == {}
