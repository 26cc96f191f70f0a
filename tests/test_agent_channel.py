"""The agent's channel: a character device (a PTY stands in for the virtio
port), a port with nobody behind it, and the real host closed and reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from diskname.agent import transport
from diskname.agent.records import DeviceRecord
from diskname.agent.service import AgentConfig, AgentService
from diskname.agent.transport import MAX_PENDING, CharDeviceLink
from diskname.host.service import HostConfig, HostService
from diskname.host.vm import Vm
from diskname.protocol import agent_wire as aw
from diskname.protocol.lines import LineDecoder, NeedData

from .conftest import in_background, started, wait_until

ROOT = DeviceRecord("/dev/vda", "1a2b3c4d-5e6f-7a8b-9", bus="virtio", diskseq=1)


class StaticSource:
    """A source whose disks the test sets."""

    def __init__(self, records: Iterable[DeviceRecord]) -> None:
        self.records = list(records)
        self._changed = asyncio.Event()

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def snapshot(self) -> list[DeviceRecord]:
        return list(self.records)

    def filesystems(self) -> list[dict[str, Any]]:
        return [{"path": "/", "fs": "ext4", "total": 10, "used": 4}]

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    def set(self, records: Iterable[DeviceRecord]) -> None:
        self.records = list(records)
        self._changed.set()


class PtyHost:
    """The host end of a PTY; ``path`` (a symlink, like /dev/virtio-ports/*) names the guest end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.master = -1
        self.decoder = LineDecoder()
        self.received: asyncio.Queue[aw.Message] = asyncio.Queue()

    def open(self) -> None:
        self.master, slave = os.openpty()
        tmp = self.path.with_suffix(".new")
        tmp.symlink_to(os.ttyname(slave))
        tmp.replace(self.path)
        os.close(slave)
        self.decoder = LineDecoder()
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)

    def _readable(self) -> None:
        with contextlib.suppress(OSError):
            self.decoder.receive_data(os.read(self.master, 65536))
        while not isinstance(event := self.decoder.next_event(), NeedData):
            if isinstance(event, bytes):
                self.received.put_nowait(aw.decode_message(event))

    def send(self, msg: aw.Message) -> None:
        os.write(self.master, aw.encode_message(msg))

    async def next(self, kind: type[Any], timeout: float = 5.0) -> Any:
        async with asyncio.timeout(timeout):
            while not isinstance(msg := await self.received.get(), kind):
                pass
            return msg


@contextlib.asynccontextmanager
async def agent_running(config: AgentConfig, source: StaticSource) -> AsyncIterator[AgentService]:
    agent = AgentService(config, source=source)
    async with in_background(agent):
        yield agent


async def test_the_agent_speaks_over_a_character_device_and_outlives_its_host(
    short_dir: Path,
) -> None:
    host = PtyHost(short_dir / "ovirt-guest-agent.0")
    host.open()
    source = StaticSource([ROOT])
    async with agent_running(AgentConfig(channel=str(host.path)), source) as agent:
        assert await host.next(aw.Heartbeat) == aw.Heartbeat(api_version=3)
        usage = await host.next(aw.DisksUsage)
        assert usage.mapping[ROOT.serial].name == "/dev/vda"
        assert usage.disks == ({"path": "/", "fs": "ext4", "total": 10, "used": 4},)
        host.send(aw.Refresh(api_version=3))
        await host.next(aw.DisksUsage)
        for n in range(2, 5):
            # The host side goes away (the guest reads EIO), then comes back.
            host.close()
            host.open()
            await host.next(aw.Heartbeat)
            host.send(aw.Refresh(api_version=3))
            await host.next(aw.DisksUsage)
            assert agent.connections == n
        source.set([ROOT, DeviceRecord("/dev/vdb", "data-serial", diskseq=2)])
        usage = await host.next(aw.DisksUsage)
        assert set(usage.mapping) == {ROOT.serial, "data-serial"}
    host.close()


class SilentPort:
    """A link that ends at once: a virtio port with no host connected reads EOF."""

    def __init__(self) -> None:
        self.reader = asyncio.StreamReader()
        self.reader.feed_eof()
        self.written = b""

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


async def test_a_port_with_no_host_behind_it_is_retried_slowly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    opened: list[float] = []

    async def open_silent(endpoint: Any) -> SilentPort:
        opened.append(loop.time())
        return SilentPort()

    monkeypatch.setattr(transport, "open_endpoint", open_silent)
    async with agent_running(AgentConfig(channel="/dev/vport0p1"), StaticSource([ROOT])):
        await wait_until(lambda: len(opened) >= 6)
    gaps = [b - a for a, b in itertools.pairwise(opened)]
    # Doubling from 0.05 s: no busy loop while the host is away.
    assert all(gap >= 0.9 * 0.05 * 2**i for i, gap in enumerate(gaps)), gaps


async def test_a_channel_nobody_reads_is_dropped_not_grown() -> None:
    master, slave = os.openpty()
    try:
        link = CharDeviceLink.open(os.ttyname(slave))
        chunk = b"x" * 65536 + b"\n"
        for _ in range(2 * MAX_PENDING // len(chunk)):
            link.write(chunk)
        assert link.is_closing()
        assert await link.reader.read() == b""
    finally:
        os.close(slave)
        os.close(master)


async def test_the_default_ports_are_tried_in_order(short_dir: Path) -> None:
    from diskname.agent.transport import Endpoint, open_endpoint

    legacy = PtyHost(short_dir / "com.redhat.rhevm.vdsm")
    legacy.open()
    endpoint = Endpoint(kind="chardev", paths=(str(short_dir / "missing"), str(legacy.path)))
    link = await open_endpoint(endpoint)
    link.write(aw.encode_message(aw.Heartbeat()))
    assert await legacy.next(aw.Heartbeat) == aw.Heartbeat()
    link.close()
    legacy.close()
    with pytest.raises(FileNotFoundError):
        await open_endpoint(Endpoint(kind="chardev", paths=(str(short_dir / "missing"),)))


async def test_the_real_host_closed_and_reopened_ten_times(short_dir: Path) -> None:
    """Acceptance 4: the agent reconnects each time; the host ends with the current mapping."""
    vm_id, root_disk = str(uuid.uuid4()), str(uuid.uuid4())
    config = HostConfig(
        listen_port=0,
        state_dir=short_dir / "state",
        channels_dir=short_dir / "ch",
        channel_mode="listen",
    )
    channel = config.channels_dir / f"{vm_id}.ovirt-guest-agent.0"
    records = [DeviceRecord("/dev/vda", root_disk[:20], diskseq=1)]
    source = StaticSource(records)
    async with agent_running(AgentConfig(connect=f"unix:{channel}"), source) as agent:
        for n in range(1, 11):
            host = HostService(config)
            async with started(host):
                if n == 1:
                    await host.create_vm(vm_id, "guest", [{"diskId": root_disk, "iface": "virtio"}])
                await one_life(host.registry.get(vm_id), agent, source, n)
            # Changed while no host is there: only the reconnect can tell the next one.
            source.set([*records, DeviceRecord("/dev/vdz", f"offline-{n}")])
    assert agent.connections == 10


async def one_life(vm: Vm, agent: AgentService, source: StaticSource, n: int) -> None:
    """One host lifetime: the agent reconnects, the host gets the mapping, then a change."""
    await wait_until(lambda: agent.connections == n)
    want = {r.serial for r in source.records}
    await wait_until(lambda: set(vm.mapping) == want)
    # Change the guest while this host is up; the next one must start from it.
    source.set([*source.records[:1], DeviceRecord(f"/dev/vd{chr(97 + n)}", f"serial-{n}")])
    await wait_until(lambda: f"serial-{n}" in vm.mapping)
