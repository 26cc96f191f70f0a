"""Host.getAllVmStats with a digest (SPEC §5): cached entries, an unchanged host in a few bytes."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import orjson

from diskname.host.stats import StatsCache, stats_reply
from diskname.host.vm import Vm, VmState
from diskname.protocol.host_wire import AgentInfo, StatsEntry, asked_digest
from diskname.streams import JsonRpcClient

from .conftest import running_host


def vm(name: str) -> Vm:
    return Vm(VmState.new(str(uuid.uuid4()), name))


def entry(v: Vm) -> StatsEntry:
    return StatsEntry(v.id, "Up", v.hash, AgentInfo("up", v.api_version))


def listed(snapshot: Any) -> Any:
    return orjson.loads(orjson.dumps(snapshot.entries))


def test_the_digest_moves_with_any_entry_and_only_then() -> None:
    cache, a, b = StatsCache(), vm("a"), vm("b")
    first = cache.snapshot([a, b], entry)
    assert listed(first) == [entry(a).to_wire(), entry(b).to_wire()]
    assert cache.snapshot([a, b], entry) is first  # nothing moved: nothing re-encoded
    a.heartbeat(1.0, 3)  # the agent's API version is part of the entry
    second = cache.snapshot([a, b], entry)
    assert second.digest != first.digest and listed(second)[0]["agent"]["apiVersion"] == 3
    assert cache.snapshot([a], entry).digest not in (first.digest, second.digest)
    assert cache.snapshot([a, b], entry).digest == second.digest  # same content, same digest


def test_the_reply_keeps_the_old_shape_unless_asked_with_a_digest() -> None:
    snapshot = StatsCache().snapshot([vm("a")], entry)
    assert stats_reply(snapshot, asked_digest({})) is snapshot.entries
    assert stats_reply(snapshot, asked_digest({"digest": ""})) == {
        "digest": snapshot.digest,
        "vms": snapshot.entries,
    }
    assert stats_reply(snapshot, snapshot.digest) == {"digest": snapshot.digest}
    assert stats_reply(snapshot, asked_digest({"digest": 5})) is snapshot.entries


async def test_a_host_answers_an_unchanged_digest_with_the_digest_alone(short_dir: Path) -> None:
    vm_id, root = str(uuid.uuid4()), str(uuid.uuid4())
    async with (
        running_host(short_dir) as host,
        await JsonRpcClient.connect("127.0.0.1", host.port) as rpc,
    ):
        devices = [{"diskId": root, "iface": "virtio"}]
        await rpc.call("VM.create", {"vmId": vm_id, "name": "a", "devices": devices})
        full = await rpc.call("Host.getAllVmStats", {"digest": ""})
        assert [e["vmId"] for e in full["vms"]] == [vm_id]
        assert await rpc.call("Host.getAllVmStats", {"digest": full["digest"]}) == {
            "digest": full["digest"]
        }
        drive = {"diskId": str(uuid.uuid4()), "iface": "virtio"}
        await rpc.call("VM.hotplugDisk", {"vmId": vm_id, "drive": drive})
        moved = await rpc.call("Host.getAllVmStats", {"digest": full["digest"]})
        assert moved["digest"] != full["digest"]
        assert moved["vms"][0]["hash"] != full["vms"][0]["hash"]
        assert await rpc.call("Host.getAllVmStats") == moved["vms"]  # old engines
