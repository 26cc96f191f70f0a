"""Issue 4, acceptance 1: every hostile guest input, over a real socket.

Each case is sent by one VM's "agent" over its UNIX channel while a second VM
is connected too. Afterwards: the input was dropped and counted under its
reason, visible through JSON-RPC (``Host.getVmStats``, ``Host.getStats``);
the same channel still takes a valid ``disks-usage``; the other VM saw
nothing; the bytes held for an unfinished line stay under the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import orjson
import pytest

from diskname.host.service import HostService
from diskname.host.vm import Vm
from diskname.protocol.lines import MAX_LINE
from diskname.streams import READ_CHUNK, JsonRpcClient, close_writer

from .conftest import wait_until
from .test_host_channels import (
    assert_still_accepts,
    create_vm,
    open_agent,
    running_host,
    usage,
)

# What one connection may hold for an unfinished line: the cap plus one read.
BUFFER_BOUND = MAX_LINE + READ_CHUNK


def disks_usage_line(mapping: Any) -> bytes:
    return orjson.dumps({"__name__": "disks-usage", "mapping": mapping}) + b"\n"


HOSTILE: list[tuple[str, bytes, str]] = [
    ("line over 1 MiB", b'{"__name__":"x","p":"' + b"a" * MAX_LINE + b'"}\n', "oversized"),
    ("invalid UTF-8", b'{"__name__":"heartbeat","x":"\xff\xfe"}\n', "invalid_utf8"),
    ("invalid JSON", b'{"__name__": "heartbeat"\n', "invalid_json"),
    ("JSON that is not an object", b"[1, 2, 3]\n", "not_object"),
    ("a bare string", b'"heartbeat"\n', "not_object"),
    ("no name", b'{"apiVersion": 3}\n', "missing_name"),
    ("mapping is a list", disks_usage_line([{"name": "/dev/vdb"}]), "bad_mapping"),
    ("mapping holds numbers", disks_usage_line({"s": 5}), "bad_mapping"),
    ("number as name", disks_usage_line({"s": {"name": 5}}), "bad_field"),
    ("nested junk as name", disks_usage_line({"s": {"name": {"a": [[{}]]}}}), "bad_field"),
    (
        "nested junk in an extension",
        disks_usage_line({"s": {"name": "/dev/vdb", "partitions": [[{"x": [1]}]]}}),
        "bad_field",
    ),
    ("10 KB name", disks_usage_line({"s": {"name": "/dev/" + "v" * 10_000}}), "field_too_long"),
    ("10 KB key", disks_usage_line({"s" * 10_000: {"name": "/dev/vdb"}}), "field_too_long"),
    (
        "5,000 entries",
        disks_usage_line({str(i): {"name": "/dev/vdb"} for i in range(5000)}),
        "too_many_entries",
    ),
    # 100,000 entries do not even fit in one line.
    (
        "100,000 entries",
        disks_usage_line({str(i): {"name": "/dev/vdb"} for i in range(100_000)}),
        "oversized",
    ),
    ("unknown message", b'{"__name__": "host-name", "name": "guest"}\n', "unknown_message"),
    ("host command", b'{"__name__": "refresh", "apiVersion": 3}\n', "unexpected_message"),
    ("NUL bytes", b'{"__name__": "heartbeat"}\x00\x00\n', "nul_byte"),
    ("only NUL bytes", b"\x00" * 100 + b"\n", "nul_byte"),
    ("bad heartbeat", b'{"__name__": "heartbeat", "apiVersion": "3"}\n', "bad_field"),
]


class Pair(NamedTuple):
    """A running host with two VMs, each with an agent connected: the target and a bystander."""

    host: HostService
    vm: Vm
    writer: asyncio.StreamWriter
    bystander: Vm
    other: asyncio.StreamWriter


@contextlib.asynccontextmanager
async def two_vms(short_dir: Path) -> AsyncIterator[Pair]:
    async with running_host(short_dir) as host:
        vm, bystander = await create_vm(host), await create_vm(host)
        _, writer = await open_agent(host, vm)
        _, other = await open_agent(host, bystander)
        try:
            yield Pair(host, vm, writer, bystander, other)
        finally:
            await close_writer(writer)
            await close_writer(other)


async def rpc_counters(host: HostService, vm: Vm) -> tuple[dict[str, int], dict[str, Any]]:
    async with await JsonRpcClient.connect("127.0.0.1", host.port) as c:
        return (await c.call("Host.getVmStats", {"vmId": vm.id}))["rejected"], await c.call(
            "Host.getStats"
        )


@pytest.mark.parametrize(("what", "payload", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
async def test_hostile_input_is_dropped_counted_and_every_vm_still_served(
    short_dir: Path, what: str, payload: bytes, reason: str
) -> None:
    async with two_vms(short_dir) as (host, vm, writer, bystander, other):
        await assert_still_accepts(writer, vm, "/dev/vda")
        await assert_still_accepts(other, bystander, "/dev/vdz")
        writer.write(payload)
        await assert_still_accepts(writer, vm, "/dev/vdb")
        await assert_still_accepts(other, bystander, "/dev/vdy")
        counted, everything = await rpc_counters(host, vm)
        assert counted == {reason: 1}
        assert everything["rejected"] == {vm.id: {reason: 1}, bystander.id: {}}
        assert host._running[vm.id].channel.buffered <= BUFFER_BOUND


async def test_a_line_that_never_ends_is_counted_once_and_memory_stays_bounded(
    short_dir: Path,
) -> None:
    async with two_vms(short_dir) as (host, vm, writer, bystander, other):
        channel = host._running[vm.id].channel
        chunk = b"x" * 65536
        peak = 0
        for _ in range(16 * MAX_LINE // len(chunk)):  # 16 MiB without a newline
            writer.write(chunk)
            await writer.drain()
            peak = max(peak, channel.buffered)
        await wait_until(lambda: vm.rejected["oversized"] == 1)
        await assert_still_accepts(other, bystander, "/dev/vdz")  # meanwhile, the other VM
        assert peak <= BUFFER_BOUND
        writer.write(b"\n")  # the end of the monster line
        await assert_still_accepts(writer, vm, "/dev/vdc")
        counted, _ = await rpc_counters(host, vm)
        assert counted == {"oversized": 1}
        assert bystander.rejected == {}


async def test_a_flood_of_10000_lines_a_second_is_cut_to_the_rate_limit(short_dir: Path) -> None:
    # The default budget: 1000 messages/s.
    async with two_vms(short_dir) as (host, vm, writer, bystander, other):
        loop = asyncio.get_running_loop()
        heartbeat = b'{"__name__": "heartbeat", "apiVersion": 3}\n'
        async with await JsonRpcClient.connect("127.0.0.1", host.port) as c:
            started, slowest = loop.time(), 0.0
            for _ in range(20):  # 2 s at 10,000 lines/s, in 0.1 s slices
                writer.write(heartbeat * 1000)
                await writer.drain()
                t0 = loop.time()
                assert await c.call("Host.ping") is True
                slowest = max(slowest, loop.time() - t0)
                await asyncio.sleep(0.1)  # sync-ok: pacing the flood, not waiting for it
            # Whatever the one-second windows, at most 1000 per started second got in.
            allowed = 1000 * (int(loop.time() - started) + 2)
            await wait_until(lambda: vm.rejected["flood"] >= 20_000 - allowed)
            assert slowest < 1.0  # the host kept answering the engine

            def accepted() -> bool:
                writer.write(usage("/dev/vdf"))  # dropped until a new window opens
                return vm.mapping.get("s1", {}).get("name") == "/dev/vdf"

            await wait_until(accepted, timeout=5, interval=0.05)
            await assert_still_accepts(other, bystander, "/dev/vdz")
            stats = await c.call("Host.getVmStats", {"vmId": vm.id})
            assert set(stats["rejected"]) == {"flood"}
            assert stats["agent"]["status"] == "up"
            assert bystander.rejected == {}


async def test_a_line_cut_short_by_a_hangup_is_counted_and_the_next_agent_is_heard(
    short_dir: Path,
) -> None:
    async with running_host(short_dir) as host:
        vm = await create_vm(host)
        _, writer = await open_agent(host, vm)
        writer.write(b'{"__name__": "disks-usage", "mapping": {"s1": ')
        await close_writer(writer)
        await wait_until(lambda: vm.rejected["truncated"] == 1)
        _, writer = await open_agent(host, vm)
        try:
            await assert_still_accepts(writer, vm, "/dev/vdd")
        finally:
            await close_writer(writer)


async def test_random_bytes_over_the_socket_never_break_the_channel(short_dir: Path) -> None:
    rng = random.Random(1234)
    # About 1,600 random "lines": more than the default flood limit allows.
    async with running_host(short_dir, agent_rate_limit=10**6) as host:
        vm = await create_vm(host)
        _, writer = await open_agent(host, vm)
        try:
            for _ in range(200):
                writer.write(rng.randbytes(rng.randint(1, 4096)))
            await writer.drain()
            writer.write(b"\n")
            await assert_still_accepts(writer, vm, "/dev/vde")
            assert sum(vm.rejected.values()) > 0
        finally:
            await close_writer(writer)


async def test_a_guest_that_never_reads_does_not_grow_the_hosts_memory(short_dir: Path) -> None:
    async with running_host(short_dir, agent_rate_limit=10**6) as host:
        vm = await create_vm(host)
        _, writer = await open_agent(host, vm)  # and never read again
        try:
            # Every heartbeat with a new version is answered; the answers pile up unread.
            versions = b"".join(
                orjson.dumps({"__name__": "heartbeat", "apiVersion": i % 2}) + b"\n"
                for i in range(200_000)
            )
            writer.write(versions)
            await writer.drain()
            await wait_until(lambda: vm.rejected["unread_output"] > 0, timeout=20)
            await assert_still_accepts(writer, vm, "/dev/vdg")
        finally:
            await close_writer(writer)
