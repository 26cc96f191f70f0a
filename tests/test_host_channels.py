"""Agent channels: the protocol on connect, both channel modes, and a fuzzed decoder.

Hostile guest input over real sockets (issue 4, acceptance 1) is in
``test_host_hostile.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from diskname.host.channels import GuestProtocol, RateLimit, channel_path
from diskname.host.service import HostService
from diskname.host.vm import Vm, VmState
from diskname.protocol import agent_wire as aw
from diskname.protocol.lines import NEED_DATA, LineDecoder
from diskname.streams import close_writer

from .conftest import running_host, wait_until

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def create_vm(host: HostService) -> Vm:
    vm_id = str(uuid.uuid4())
    return await host.create_vm(vm_id, "guest", [])


async def open_agent(host: HostService, vm: Vm) -> Stream:
    """Connect as the VM's agent; returns once the host's refresh arrived."""
    path = channel_path(host.config.channels_dir, vm.id)
    await wait_until(path.exists)
    reader, writer = await asyncio.open_unix_connection(str(path))
    first = await asyncio.wait_for(reader.readline(), 5)
    assert aw.decode_message(first.rstrip(b"\n")) == aw.Refresh(api_version=3)
    return reader, writer


def usage(name: str) -> bytes:
    return orjson.dumps({"__name__": "disks-usage", "mapping": {"s1": {"name": name}}}) + b"\n"


async def assert_still_accepts(writer: asyncio.StreamWriter, vm: Vm, name: str) -> None:
    writer.write(usage(name))
    await wait_until(lambda: vm.mapping.get("s1", {}).get("name") == name)


async def test_heartbeats_are_answered_with_the_api_version_when_it_changes(
    short_dir: Path,
) -> None:
    async with running_host(short_dir, agent_timeout=0.3) as host:
        vm = await create_vm(host)
        reader, writer = await open_agent(host, vm)
        try:
            for version in (0, 0, 7, 3, 1):
                writer.write(aw.encode_message(aw.Heartbeat(api_version=version)))
            answers = [aw.decode_message((await reader.readline()).rstrip()) for _ in range(3)]
            assert answers == [aw.ApiVersion(0), aw.ApiVersion(3), aw.ApiVersion(1)]
            assert host.agent_status(vm) == "up"
            assert vm.api_version == 1
            await wait_until(lambda: host.agent_status(vm) == "unresponsive")
        finally:
            await close_writer(writer)


async def test_the_newest_agent_connection_wins(short_dir: Path) -> None:
    async with running_host(short_dir) as host:
        vm = await create_vm(host)
        old_reader, old = await open_agent(host, vm)
        _, new = await open_agent(host, vm)
        try:
            assert await asyncio.wait_for(old_reader.read(), 5) == b""  # closed by the host
            await assert_still_accepts(new, vm, "/dev/vdg")
        finally:
            await close_writer(old)
            await close_writer(new)


async def test_connect_mode_dials_the_socket_qemu_serves_and_retries(short_dir: Path) -> None:
    vm_id = str(uuid.uuid4())
    lines: asyncio.Queue[bytes] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def qemu(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while line := await reader.readline():
            lines.put_nowait(line)

    async with running_host(short_dir, channel_mode="connect") as host:
        vm = await host.create_vm(vm_id, "guest", [])
        # QEMU comes up after the host started dialling.
        path = channel_path(host.config.channels_dir, vm_id)
        server = await asyncio.start_unix_server(qemu, str(path))
        try:
            refresh = await asyncio.wait_for(lines.get(), 5)
            assert aw.decode_message(refresh.rstrip()) == aw.Refresh(api_version=3)
            await assert_still_accepts(writers[0], vm, "/dev/vdi")
        finally:
            server.close()
            for writer in writers:
                await close_writer(writer)


def drain(decoder: LineDecoder, protocol: GuestProtocol) -> None:
    while (event := decoder.next_event()) is not NEED_DATA:
        protocol.receive(event, 0.0)


FRAGMENTS = [
    b"\n",
    b"\x00",
    b"\xff",
    b"{",
    b"}",
    b'"__name__"',
    b":",
    b'"disks-usage"',
    b'"heartbeat"',
    b'"mapping"',
    b"{}",
    b"[]",
    b"5",
    b'"name"',
    b'"/dev/vdb"',
    b",",
    b"\r\n",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=300), st.sampled_from(FRAGMENTS)), max_size=40),
    st.lists(st.integers(min_value=1, max_value=97), min_size=1, max_size=10),
)
def test_random_bytes_in_random_chunks_through_the_channel_path(
    pieces: list[bytes], sizes: list[int]
) -> None:
    vm = Vm(VmState.new("vm", "fuzz"))
    published: list[dict[str, object]] = []
    protocol = GuestProtocol(vm, published.append, RateLimit(10**9))
    decoder = LineDecoder(max_line=256)  # a small cap so oversizing gets exercised too
    data = b"".join(pieces)
    pos = 0
    while pos < len(data):
        size = sizes[pos % len(sizes)]
        decoder.receive_data(data[pos : pos + size])
        drain(decoder, protocol)
        pos += size
    assert decoder.buffered <= 256 + max(sizes)
    decoder.receive_data(b"\n" + usage("/dev/vdq"))
    drain(decoder, protocol)
    assert published[-1] == {"s1": {"name": "/dev/vdq"}}


async def test_a_closed_channel_makes_the_guest_agent_unresponsive_and_names_stay(
    short_dir: Path,
) -> None:
    """SPEC §17 on the host: a source going is seen at once, its names are kept, and a
    repeated unchanged mapping moves the confirmation without moving the stats digest."""
    from diskname.streams import JsonRpcClient

    async with running_host(short_dir, agent_timeout=30) as host:
        vm = await create_vm(host)
        assert host.agent_status(vm) == "none"
        _, writer = await open_agent(host, vm)
        rpc = await JsonRpcClient.connect("127.0.0.1", host.port)
        try:
            writer.write(usage("/dev/vdb"))
            await wait_until(lambda: host.agent_status(vm) == "up")
            first = await rpc.call("Host.getAllVmStats", {"digest": "", "confirmed": ""})
            (entry,) = first["vms"]
            assert (entry["agent"]["status"], entry["agent"]["sources"]) == ("up", ["agent"])
            confirmed_at = first["confirmed"]["ms"]["agent"][vm.id]
            cursor = first["confirmed"]["cursor"]
            writer.write(usage("/dev/vdb"))  # the same mapping again: a confirmation
            await wait_until(lambda: host.confirmations.cursor != cursor)
            again = await rpc.call(
                "Host.getAllVmStats", {"digest": first["digest"], "confirmed": cursor}
            )
            assert "vms" not in again  # unchanged stats: no listing
            assert again["confirmed"]["ms"]["agent"][vm.id] > confirmed_at
            current = again["confirmed"]["cursor"]
            quiet = await rpc.call(
                "Host.getAllVmStats", {"digest": first["digest"], "confirmed": current}
            )
            assert quiet == {"digest": first["digest"]}  # nothing new: nothing but the digest
            await close_writer(writer)  # the agent dies: its channel closes
            await wait_until(lambda: host.agent_status(vm) == "unresponsive")
            after = await rpc.call("Host.getAllVmStats", {"digest": first["digest"]})
            (entry,) = after["vms"]
            assert (entry["agent"]["status"], entry["agent"]["sources"]) == ("unresponsive", [])
            assert vm.mapping["s1"]["name"] == "/dev/vdb"  # kept, as oVirt keeps it
        finally:
            await rpc.close()
