"""The agent against a stand-in host over real UNIX and TCP sockets.

The test plays both host ends: the agent channel (it reads the agent's
messages and can send commands) and the sim hardware port (it plugs disks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from diskname.agent.service import AgentConfig, AgentService
from diskname.protocol import agent_wire as aw
from diskname.protocol.simhw import HardwareState, VirtualDisk, encode_state
from diskname.streams import close_writer, read_lines

from .conftest import in_background

M = TypeVar("M")
ROOT = VirtualDisk("dev-root", "root-serial-0000000", "virtio", "0000:00:05.0")
DATA = VirtualDisk("dev-data", "data-serial-0000000", "virtio_scsi", "0:0:0:0")


class FakeHost:
    """The host's two ends for one guest: agent channel and hardware port."""

    def __init__(self, root: Path, tcp: bool = False) -> None:
        self.channel, self.hw = root / "agent.sock", root / "hw.sock"
        self.tcp, self.port = tcp, 0
        self.disks: tuple[VirtualDisk, ...] = (ROOT,)
        self.received: asyncio.Queue[aw.Message] = asyncio.Queue()
        self.agents: list[asyncio.StreamWriter] = []
        self.guests: list[asyncio.StreamWriter] = []
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def connect(self) -> str:
        return f"tcp:127.0.0.1:{self.port}" if self.tcp else f"unix:{self.channel}"

    async def start(self, hw: bool = True) -> None:
        if self.tcp:
            server = await asyncio.start_server(self._agent, "127.0.0.1", self.port)
            self.port = server.sockets[0].getsockname()[1]
        else:
            server = await asyncio.start_unix_server(self._agent, str(self.channel))
        self._servers.append(server)
        if hw:
            self._servers.append(await asyncio.start_unix_server(self._guest, str(self.hw)))

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for writer in self.agents + self.guests:
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self._servers, self.agents, self.guests = [], [], []

    def _track(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        self.agents.append(writer)
        async for line in read_lines(reader):
            if isinstance(line, bytes):
                self.received.put_nowait(aw.decode_message(line))
        await close_writer(writer)

    async def _guest(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._track()
        self.guests.append(writer)
        writer.write(encode_state(HardwareState(self.disks)))
        while await reader.read(1024):
            pass
        await close_writer(writer)

    def plug(self, *disks: VirtualDisk) -> None:
        self.disks = disks
        for writer in self.guests:
            writer.write(encode_state(HardwareState(disks)))

    def send(self, msg: aw.Message) -> None:
        for writer in self.agents:
            writer.write(aw.encode_message(msg))

    async def next(self, kind: type[M], timeout: float = 5.0) -> M:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.received.get()
                if isinstance(msg, kind):
                    return msg


def names(usage: aw.DisksUsage) -> dict[str, str]:
    return {serial: entry.name for serial, entry in usage.mapping.items()}


@pytest.fixture
async def host(short_dir: Path) -> AsyncIterator[FakeHost]:
    fake = FakeHost(short_dir)
    await fake.start()
    yield fake
    await fake.stop()


@contextlib.asynccontextmanager
async def running_agent(fake: FakeHost, **overrides: Any) -> AsyncIterator[AgentService]:
    config = AgentConfig(connect=fake.connect, source="sim", sim_hw=f"unix:{fake.hw}", **overrides)
    agent = AgentService(config)
    async with in_background(agent):
        yield agent


async def test_a_connect_starts_with_a_heartbeat_then_the_mapping(host: FakeHost) -> None:
    async with running_agent(host):
        first = await host.received.get()
        assert first == aw.Heartbeat(api_version=3)
        # The source waited for the boot state: the first report is already right.
        usage = await host.next(aw.DisksUsage)
        entry = usage.mapping[ROOT.serial].to_json()
        assert entry == {
            "name": "/dev/vda",
            "diskseq": 1,
            "bus": "virtio",
            "address": "0000:00:05.0",
            "by_id": [f"/dev/disk/by-id/virtio-{ROOT.serial}"],
            "size": 1 << 30,  # the sim guest reports a disk's size (SPEC §17)
        }


async def wait_mapping(host: FakeHost, want: dict[str, str]) -> aw.DisksUsage:
    while True:
        usage = await host.next(aw.DisksUsage)
        if names(usage) == want:
            return usage


async def test_a_hotplug_is_reported_only_after_the_name_delay(host: FakeHost) -> None:
    loop = asyncio.get_running_loop()
    async with running_agent(host, name_delay=0.3):
        await wait_mapping(host, {ROOT.serial: "/dev/vda"})
        plugged_at = loop.time()
        host.plug(ROOT, DATA)
        await wait_mapping(host, {ROOT.serial: "/dev/vda", DATA.serial: "/dev/sda"})
        assert loop.time() - plugged_at >= 0.3


async def test_an_unplug_is_reported_at_once(host: FakeHost) -> None:
    host.disks = (ROOT, DATA)
    loop = asyncio.get_running_loop()
    async with running_agent(host, name_delay=30.0):
        await wait_mapping(host, {ROOT.serial: "/dev/vda", DATA.serial: "/dev/sda"})
        unplugged_at = loop.time()
        host.plug(ROOT)
        await wait_mapping(host, {ROOT.serial: "/dev/vda"})
        assert loop.time() - unplugged_at < 1.0


async def test_a_burst_of_plugs_is_coalesced(host: FakeHost) -> None:
    disks = [
        VirtualDisk(f"d{i}", f"serial-{i}", "virtio", f"0000:00:{6 + i:02x}.0") for i in range(5)
    ]
    async with running_agent(host, coalesce=0.2):
        await wait_mapping(host, {ROOT.serial: "/dev/vda"})
        for n in range(1, 6):
            host.plug(ROOT, *disks[:n])
        usage = await host.next(aw.DisksUsage)
        assert len(usage.mapping) == 6


async def test_refresh_makes_the_agent_send_the_mapping_again(host: FakeHost) -> None:
    async with running_agent(host):
        await wait_mapping(host, {ROOT.serial: "/dev/vda"})
        host.send(aw.Refresh(api_version=3))
        await wait_mapping(host, {ROOT.serial: "/dev/vda"})


async def test_a_legacy_api_version_gets_names_only(host: FakeHost) -> None:
    async with running_agent(host):
        await wait_mapping(host, {ROOT.serial: "/dev/vda"})
        host.send(aw.ApiVersion(api_version=0))
        host.send(aw.Refresh(api_version=0))
        usage = await host.next(aw.DisksUsage)
        assert usage.mapping[ROOT.serial].to_json() == {"name": "/dev/vda"}


async def test_heartbeats_and_periodic_reports_keep_coming(host: FakeHost) -> None:
    async with running_agent(host, heartbeat_interval=0.05, report_interval=0.1):
        for _ in range(3):
            await host.next(aw.Heartbeat)
        for _ in range(3):
            await wait_mapping(host, {ROOT.serial: "/dev/vda"})


async def test_the_agent_reconnects_when_the_host_side_restarts(host: FakeHost) -> None:
    async with running_agent(host, name_delay=0.0) as agent:
        await wait_mapping(host, {ROOT.serial: "/dev/vda"})
        await host.stop()
        while not host.received.empty():
            host.received.get_nowait()
        host.disks = (ROOT, DATA)
        await host.start()
        assert await host.next(aw.Heartbeat) == aw.Heartbeat(api_version=3)
        await wait_mapping(host, {ROOT.serial: "/dev/vda", DATA.serial: "/dev/sda"})
        assert agent.connections == 2


async def test_the_agent_waits_for_a_host_that_is_not_there_yet(short_dir: Path) -> None:
    fake = FakeHost(short_dir, tcp=True)
    await fake.start()
    port = fake.port
    await fake.stop()  # now nobody listens on that port
    fake.port = port
    ready = asyncio.Event()
    config = AgentConfig(connect=fake.connect, source="sim", sim_hw=f"unix:{fake.hw}")
    task = asyncio.create_task(AgentService(config).run(ready))
    try:
        await fake.start(hw=False)
        await asyncio.wait_for(ready.wait(), 5)
        assert await fake.next(aw.Heartbeat) == aw.Heartbeat(api_version=3)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.stop()
