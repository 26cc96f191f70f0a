"""The host's JSON-RPC server over real loopback TCP: methods, errors, state, hash."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from diskname.host.service import HostService
from diskname.host.vm import AGENT, state_from_definition
from diskname.protocol import jsonrpc
from diskname.protocol.host_wire import Code
from diskname.protocol.lines import MAX_LINE
from diskname.streams import JsonRpcClient, RpcError, close_writer

from .conftest import running_host

REPO = Path(__file__).resolve().parent.parent
BY_ID = operator.itemgetter("vmId")


@contextlib.asynccontextmanager
async def client(
    host: HostService, notes: list[jsonrpc.Notification] | None = None
) -> AsyncIterator[JsonRpcClient]:
    on_note = notes.append if notes is not None else None
    async with await JsonRpcClient.connect("127.0.0.1", host.port, on_notification=on_note) as c:
        yield c


def new_id() -> str:
    return str(uuid.uuid4())


async def test_ping_and_capabilities(short_dir: Path) -> None:
    async with running_host(short_dir, host_id="h1") as host, client(host) as c:
        assert await c.call("Host.ping") is True
        caps = await c.call("Host.getCapabilities")
        assert caps["hostId"] == "h1" and caps["hypervisor"] == "sim" and caps["version"]


async def test_vm_lifecycle_and_device_json(short_dir: Path) -> None:
    vm_id, root, data = new_id(), new_id(), new_id()
    async with running_host(short_dir) as host, client(host) as c:
        created = await c.call(
            "VM.create",
            {"vmId": vm_id, "name": "web", "devices": [{"diskId": root, "iface": "virtio"}]},
        )
        assert created["vmId"] == vm_id and created["guestDiskMapping"] == {}
        (dev,) = created["devices"]
        assert dev["diskId"] == root and dev["serial"] == root[:20]
        assert dev["address"] == "0000:00:05.0" and dev["plugged"] is True
        assert dev["type"] == "disk" and str(uuid.UUID(dev["deviceId"])) == dev["deviceId"]
        again = await c.call("VM.create", {"vmId": vm_id, "name": "web", "devices": []})
        assert again == created  # idempotent

        drive = {"diskId": data, "iface": "sata", "serial": "LUN-SERIAL", "deviceId": new_id()}
        plugged = await c.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
        assert plugged == {**drive, "address": "0:0:0:0", "plugged": True, "type": "disk"}
        (stats,) = await c.call("Host.getAllVmStats")
        assert stats["vmId"] == vm_id and stats["status"] == "Up"
        agent = stats["agent"]
        assert (agent["status"], agent["apiVersion"], agent["sources"]) == ("none", None, [])
        assert stats["hash"] != created["hash"]

        assert await c.call("VM.hotunplugDisk", {"vmId": vm_id, "diskId": data}) is True
        (full,) = await c.call("Host.getVMFullList", {"vmList": [vm_id, new_id()]})
        assert full["hash"] == created["hash"]  # same devices again, same hash
        assert await c.call("VM.destroy", {"vmId": vm_id}) is True
        assert await c.call("Host.getAllVmStats") == []


async def test_addresses_come_from_shared_pci_and_scsi_pools(short_dir: Path) -> None:
    vm_id = new_id()
    async with running_host(short_dir) as host, client(host) as c:
        await c.call("VM.create", {"vmId": vm_id, "name": "a"})
        addresses = []
        for iface in ("virtio", "nvme", "virtio_scsi", "sata", "virtio"):
            drive = {"diskId": new_id(), "iface": iface}
            dev = await c.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
            addresses.append(dev["address"])
        assert addresses == ["0000:00:05.0", "0000:00:06.0", "0:0:0:0", "0:0:0:1", "0000:00:07.0"]


@pytest.mark.parametrize(
    ("method", "params", "code"),
    [
        ("No.such", None, jsonrpc.METHOD_NOT_FOUND),
        ("VM.create", {"vmId": "../../etc/passwd", "name": "x"}, jsonrpc.INVALID_PARAMS),
        (
            "VM.create",
            {"vmId": "4F2A9C1E-0000-4000-8000-000000000000", "name": "x"},
            jsonrpc.INVALID_PARAMS,
        ),
        ("VM.create", {"vmId": str(uuid.uuid4()), "name": ""}, jsonrpc.INVALID_PARAMS),
        (
            "VM.create",
            {"vmId": str(uuid.uuid4()), "name": "x", "devices": {}},
            jsonrpc.INVALID_PARAMS,
        ),
        (
            "VM.create",
            {
                "vmId": str(uuid.uuid4()),
                "name": "x",
                "devices": [{"diskId": str(uuid.uuid4()), "iface": "floppy"}],
            },
            jsonrpc.INVALID_PARAMS,
        ),
        ("VM.create", ["positional"], jsonrpc.INVALID_PARAMS),
        ("VM.destroy", {"vmId": str(uuid.uuid4())}, Code.UNKNOWN_VM),
        (
            "VM.hotplugDisk",
            {"vmId": str(uuid.uuid4()), "drive": {"diskId": str(uuid.uuid4()), "iface": "virtio"}},
            Code.UNKNOWN_VM,
        ),
        ("VM.hotplugDisk", {"vmId": str(uuid.uuid4())}, jsonrpc.INVALID_PARAMS),
        ("Host.getVmStats", {"vmId": str(uuid.uuid4())}, Code.UNKNOWN_VM),
        ("Host.getVMFullList", {"vmList": "all"}, jsonrpc.INVALID_PARAMS),
    ],
)
async def test_bad_calls_get_error_codes(
    short_dir: Path, method: str, params: Any, code: int
) -> None:
    async with running_host(short_dir) as host, client(host) as c:
        with pytest.raises(RpcError) as info:
            await c.call(method, params)
        assert info.value.code == code
        assert await c.call("Host.ping") is True


async def test_unplugging_a_disk_that_is_not_there_is_an_unknown_device(short_dir: Path) -> None:
    vm_id = new_id()
    async with running_host(short_dir) as host, client(host) as c:
        await c.call("VM.create", {"vmId": vm_id, "name": "a"})
        with pytest.raises(RpcError) as info:
            await c.call("VM.hotunplugDisk", {"vmId": vm_id, "diskId": new_id()})
        assert info.value.code == Code.UNKNOWN_DEVICE


GARBAGE = [
    (b"this is not json\n", jsonrpc.PARSE_ERROR, None),
    (b"\xff\xfe\xfd\n", jsonrpc.PARSE_ERROR, None),
    (b"[1, 2, 3]\n", jsonrpc.INVALID_REQUEST, None),
    (b'{"jsonrpc": "1.0", "id": 7, "method": "Host.ping"}\n', jsonrpc.INVALID_REQUEST, 7),
    (b'{"jsonrpc": "2.0", "id": 8, "method": 5}\n', jsonrpc.INVALID_REQUEST, 8),
    (
        b'{"jsonrpc": "2.0", "id": 9, "method": "Host.ping", "params": 3}\n',
        jsonrpc.INVALID_PARAMS,
        9,
    ),
    (b'{"jsonrpc": "2.0", "id": 10, "method": "Nope"}\n', jsonrpc.METHOD_NOT_FOUND, 10),
    (
        b'{"jsonrpc": "2.0", "id": "a' + b"x" * (MAX_LINE + 1) + b'"}\n',
        jsonrpc.INVALID_REQUEST,
        None,
    ),
]


async def test_garbage_gets_error_replies_on_one_connection(short_dir: Path) -> None:
    async with running_host(short_dir) as host:
        reader, writer = await asyncio.open_connection("127.0.0.1", host.port)
        try:
            for line, code, rid in GARBAGE:
                writer.write(line)
                reply = orjson.loads(await asyncio.wait_for(reader.readline(), 5))
                assert reply["jsonrpc"] == "2.0" and reply["id"] == rid
                assert reply["error"]["code"] == code
            # Notifications and stray responses need no answer; a request still works.
            writer.write(b'{"jsonrpc": "2.0", "method": "Host.ping"}\n')
            writer.write(b'{"jsonrpc": "2.0", "id": 99, "result": 1}\n')
            writer.write(b'{"jsonrpc": "2.0", "id": 100, "method": "Host.ping"}\n')
            reply = orjson.loads(await asyncio.wait_for(reader.readline(), 5))
            assert reply == {"jsonrpc": "2.0", "id": 100, "result": True}
        finally:
            await close_writer(writer)


async def test_hash_changes_are_notified_to_every_client(short_dir: Path) -> None:
    vm_id = new_id()
    first: list[jsonrpc.Notification] = []
    second: list[jsonrpc.Notification] = []
    async with running_host(short_dir) as host, client(host, first) as c, client(host, second):
        created = await c.call("VM.create", {"vmId": vm_id, "name": "a"})
        await c.call(
            "VM.hotplugDisk", {"vmId": vm_id, "drive": {"diskId": new_id(), "iface": "virtio"}}
        )
        (stats,) = await c.call("Host.getAllVmStats")
        for notes in (first, second):
            assert [n.method for n in notes] == [f"|virt|VM_status|{vm_id}"] * 2
            assert [n.params for n in notes] == [
                {"vmId": vm_id, "hash": created["hash"]},
                {"vmId": vm_id, "hash": stats["hash"]},
            ]


async def test_a_restarted_host_reports_the_same_vms_and_hashes(short_dir: Path) -> None:
    vm_ids = [new_id(), new_id()]
    async with running_host(short_dir) as host, client(host) as c:
        for vm_id in vm_ids:
            await c.call("VM.create", {"vmId": vm_id, "name": vm_id[:4]})
            for iface in ("virtio", "virtio_scsi"):
                await c.call(
                    "VM.hotplugDisk", {"vmId": vm_id, "drive": {"diskId": new_id(), "iface": iface}}
                )
        # A guest mapping is part of the hash and must survive too.
        host.registry.set_mapping(vm_ids[0], AGENT, {"s": {"name": "/dev/vdb", "diskseq": 3}})
        before_stats = await c.call("Host.getAllVmStats")
        before_full = await c.call("Host.getVMFullList")
    async with running_host(short_dir) as host, client(host) as c:
        after_stats = await c.call("Host.getAllVmStats")
        after_full = await c.call("Host.getVMFullList")
    # The guest agent's "since" is this run's: no source has spoken to it yet.
    for entry in (*before_stats, *after_stats, *before_full, *after_full):
        assert entry["agent"].pop("since")
    assert sorted(after_stats, key=BY_ID) == sorted(before_stats, key=BY_ID)
    assert sorted(after_full, key=BY_ID) == sorted(before_full, key=BY_ID)
    assert not list((short_dir / "state" / "vms").glob(".*.tmp"))


def hash_elsewhere(definition: dict[str, Any]) -> str:
    """The hash a fresh Python process computes for a VM definition."""
    code = (
        "import orjson,sys;from diskname.host.vm import state_from_definition as s;"
        "print(s(orjson.loads(sys.stdin.buffer.read())).hash)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=orjson.dumps(definition),
        capture_output=True,
        check=True,
        timeout=30,
        cwd=REPO,
    )
    return out.stdout.decode().strip()


async def test_the_hash_is_the_same_in_another_process_and_any_key_order(
    short_dir: Path,
) -> None:
    vm_id = new_id()
    async with running_host(short_dir) as host, client(host) as c:
        await c.call("VM.create", {"vmId": vm_id, "name": "a"})
        for iface in ("virtio", "nvme", "sata"):
            await c.call(
                "VM.hotplugDisk", {"vmId": vm_id, "drive": {"diskId": new_id(), "iface": iface}}
            )
        (full,) = await c.call("Host.getVMFullList")
    shuffled = {
        "guestDiskMapping": {"b": {"diskseq": 2, "name": "/dev/sda"}, "a": {"name": "/dev/vda"}},
        "devices": [dict(reversed(list(d.items()))) for d in reversed(full["devices"])],
        "name": "a",
        "vmId": vm_id,
    }
    ordered = {
        **shuffled,
        "guestDiskMapping": {"a": {"name": "/dev/vda"}, "b": {"name": "/dev/sda", "diskseq": 2}},
    }
    hashes = {await asyncio.to_thread(hash_elsewhere, d) for d in (shuffled, ordered)}
    in_process = state_from_definition(ordered)
    assert hashes == {in_process.hash}
    assert in_process.with_source(AGENT, {}).hash == full["hash"]


async def test_a_vm_with_thousands_of_drives_is_refused_at_once(short_dir: Path) -> None:
    drives = [{"diskId": new_id(), "iface": "virtio_scsi"} for _ in range(6000)]
    async with running_host(short_dir) as host, client(host) as c:
        with pytest.raises(RpcError) as info:
            await c.call("VM.create", {"vmId": new_id(), "name": "big", "devices": drives})
        assert info.value.code == jsonrpc.INVALID_PARAMS and "at most 256" in info.value.message
        vm = await c.call("VM.create", {"vmId": new_id(), "name": "ok", "devices": drives[:256]})
        assert len({d["address"] for d in vm["devices"]}) == 256  # one address each
        assert await c.call("Host.ping") is True


async def test_two_plugs_into_one_vm_at_once_get_two_addresses(short_dir: Path) -> None:
    async with running_host(short_dir) as host, client(host) as c:
        vm_id = new_id()
        await c.call("VM.create", {"vmId": vm_id, "name": "a"})
        plugs = [
            c.call("VM.hotplugDisk", {"vmId": vm_id, "drive": {"diskId": new_id(), "iface": i}})
            for i in ("virtio", "nvme", "virtio", "virtio_scsi", "sata", "virtio_scsi")
        ]
        devices = await asyncio.gather(*plugs)
        assert len({d["address"] for d in devices}) == len(devices)
