"""Agent scenarios on a umockdev testbed.

Run as ``umockdev-wrapper python -m tests.udev_guest NAME``.

Each scenario builds guest hardware, runs the real udev source (and the real
agent where the wire matters) through real libudev, and asserts. The pytest
module ``test_agent_udev`` starts one process per scenario, since the preload
library must be there from the process's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from diskname.agent.records import build_mapping, mapping_json
from diskname.agent.service import AgentConfig, AgentService
from diskname.agent.sources.udev import UdevSource
from diskname.protocol import agent_wire as aw
from diskname.streams import read_lines

from .umockdev_bed import Guest, Testbed

S_VIRTIO, S_SCSI, S_SATA, S_NVME = (
    "1a2b3c4d-5e6f-7a8b-9",
    "2b3c4d5e-6f7a-8b9c-0",
    "3c4d5e6f-7a8b-9c0d",
    "4d5e6f7a-8b9c-0d1e-2",
)


def every_bus(guest: Guest) -> None:
    guest.virtio_blk("0000:00:05.0", 2, "vda", S_VIRTIO)
    guest.virtio_scsi("0000:00:03.0", 1, "2:0:0:1", "sda", S_SCSI)
    guest.sata("0000:00:1f.2", 1, "0:0:0:0", "sdb", S_SATA)
    guest.nvme("0000:00:04.0", 0, 2, S_NVME)


async def mapping_of(source: UdevSource) -> dict[str, dict[str, Any]]:
    return mapping_json(build_mapping(source.snapshot()))


@contextlib.asynccontextmanager
async def udev_source(**kwargs: Any) -> AsyncIterator[UdevSource]:
    source = UdevSource(**kwargs)
    await source.start()
    try:
        yield source
    finally:
        await source.close()


def _names(mapping: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {key: entry["name"] for key, entry in mapping.items()}


async def check_buses(udev: bool) -> None:
    guest = Guest(Testbed(), udev=udev)
    every_bus(guest)
    async with udev_source() as source:
        mapping = await mapping_of(source)
    # Acceptance 1: the same serials and names with and without udev's properties.
    assert _names(mapping) == {
        S_VIRTIO: "/dev/vda",
        S_SCSI: "/dev/sda",
        S_SATA: "/dev/sdb",
        S_NVME: "/dev/nvme0n1",  # namespaces share the serial: the first one is reported
    }, mapping
    assert {k: v["bus"] for k, v in mapping.items()} == {
        S_VIRTIO: "virtio",
        S_SCSI: "virtio_scsi",
        S_SATA: "sata",
        S_NVME: "nvme",
    }
    assert mapping[S_VIRTIO]["address"] == "0000:00:05.0"
    assert mapping[S_SCSI]["address"] == {"pci": "0000:00:03.0", "scsi": "2:0:0:1"}
    assert mapping[S_SATA]["address"] == {"pci": "0000:00:1f.2", "scsi": "0:0:0:0"}
    assert mapping[S_NVME]["address"] == "0000:00:04.0"
    assert mapping[S_VIRTIO]["size"] == 2097152 * 512
    assert [mapping[s]["diskseq"] for s in (S_VIRTIO, S_SCSI, S_SATA, S_NVME)] == [1, 2, 3, 4]
    if udev:
        assert mapping[S_VIRTIO]["by_id"] == [f"/dev/disk/by-id/virtio-{S_VIRTIO}"]
        assert mapping[S_VIRTIO]["by_path"] == "/dev/disk/by-path/pci-0000:00:05.0"
        assert mapping[S_SCSI]["by_id"] == [f"/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_{S_SCSI}"]
    else:
        assert all("by_id" not in entry for entry in mapping.values())


async def buses() -> None:
    await check_buses(udev=True)


async def buses_sysfs_only() -> None:
    await check_buses(udev=False)


async def no_serial() -> None:
    guest = Guest(Testbed())
    guest.virtio_blk("0000:00:07.0", 3, "vdc", "")
    async with udev_source() as source:
        mapping = await mapping_of(source)
    assert mapping == {
        "address:0000:00:07.0": {
            "name": "/dev/vdc",
            "bus": "virtio",
            "address": "0000:00:07.0",
            "diskseq": 1,
            "size": 2097152 * 512,
            "by_path": "/dev/disk/by-path/pci-0000:00:07.0",
        }
    }, mapping


def _mount_table(mnt: str, minor: int) -> str:
    table = os.path.join(mnt, "mountinfo")
    Path(table).write_text(
        f"25 1 8:{minor} / {mnt}/boot rw - ext4 /dev/vdb2 rw\n"
        f"26 1 254:0 / {mnt} rw,relatime shared:1 - xfs /dev/mapper/vg-data rw\n"
        f"27 1 254:0 /sub {mnt}/bind\\040dir rw - xfs /dev/mapper/vg-data rw\n"
        "28 1 0:22 / /proc rw - proc proc rw\n"
    )
    return table


async def partitions_and_holders() -> None:
    guest = Guest(Testbed())
    disk = guest.virtio_blk("0000:00:05.0", 2, "vdb", S_VIRTIO)
    guest.partition(disk, "vdb1", 1)
    second = guest.partition(disk, "vdb2", 2)
    guest.partition(disk, "vdb10", 10)
    guest.dm("vg-data", second)
    guest.virtio_blk("0000:00:06.0", 3, "vdc", S_SCSI)  # a plain neighbour
    with tempfile.TemporaryDirectory() as mnt:
        os.mkdir(f"{mnt}/boot")
        minor = 16 * 3  # vdb2: the third block device added
        table = _mount_table(mnt, minor)
        async with udev_source(mountinfo=table) as source:
            entry = (await mapping_of(source))[S_VIRTIO]
            disks = source.filesystems()
    assert entry["partitions"] == ["/dev/vdb1", "/dev/vdb2", "/dev/vdb10"], entry
    assert entry["holders"] == ["/dev/mapper/vg-data"], entry
    assert entry["mountpoints"] == [mnt, f"{mnt}/bind dir", f"{mnt}/boot"], entry
    # One filesystem per device; the bind mount of a subdirectory is not another one.
    usage = {d["path"]: d for d in disks}
    assert sorted((d["path"], d["fs"]) for d in disks) == [(mnt, "xfs"), (f"{mnt}/boot", "ext4")]
    assert usage[mnt]["total"] > 0 and 0 <= usage[mnt]["used"] <= usage[mnt]["total"]


class StandInHost:
    """The host end of the agent channel, over a UNIX socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.usages: asyncio.Queue[aw.DisksUsage] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_unix_server(self._agent, self.path)

    async def _agent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for line in read_lines(reader):
            msg = aw.decode_message(line) if isinstance(line, bytes) else None
            if isinstance(msg, aw.DisksUsage):
                self.usages.put_nowait(msg)
        writer.close()

    async def next(self, timeout: float = 5.0) -> dict[str, aw.DiskEntry]:
        async with asyncio.timeout(timeout):
            return dict((await self.usages.get()).mapping)

    async def until(
        self, want: Callable[[dict[str, aw.DiskEntry]], bool]
    ) -> dict[str, aw.DiskEntry]:
        while not want(mapping := await self.next()):
            pass
        return mapping


@contextlib.asynccontextmanager
async def agent_and_host(
    uevents: str = "udev", coalesce: float = 0.02
) -> AsyncIterator[tuple[AgentService, StandInHost]]:
    with tempfile.TemporaryDirectory(prefix="dn") as tmp:
        host = StandInHost(os.path.join(tmp, "agent.sock"))
        await host.start()
        config = AgentConfig(connect=f"unix:{host.path}", uevents=uevents, coalesce=coalesce)
        agent = AgentService(config)
        task = asyncio.create_task(agent.run())
        try:
            yield agent, host
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert host.server is not None
            host.server.close()


async def hotplug(uevents: str = "udev") -> None:
    guest = Guest(Testbed())
    guest.virtio_blk("0000:00:05.0", 2, "vda", S_VIRTIO)
    async with agent_and_host(uevents) as (_, host):
        assert set(await host.next()) == {S_VIRTIO}
        vdb = guest.virtio_blk("0000:00:06.0", 3, "vdb", S_SCSI)  # its "add" uevent goes out
        plugged = await host.next()
        assert plugged[S_SCSI].name == "/dev/vdb"
        first_seq = plugged[S_SCSI].extra["diskseq"]
        guest.bed.unplug(vdb)
        assert set(await host.next()) == {S_VIRTIO}
        # Re-plug under the same name: only the diskseq tells it apart.
        vdb = guest.virtio_blk("0000:00:06.0", 3, "vdb", S_SCSI)
        again = await host.next()
        assert again[S_SCSI].name == "/dev/vdb"
        assert again[S_SCSI].extra["diskseq"] > first_seq


async def hotplug_kernel_uevents() -> None:
    await hotplug("kernel")


async def burst_of_50() -> None:
    guest = Guest(Testbed(), udev=False)
    guest.virtio_blk("0000:00:05.0", 2, "vda", S_VIRTIO)
    async with agent_and_host(coalesce=0.2) as (agent, host):
        await host.next()
        for n in range(50):
            guest.virtio_blk(f"0000:01:{n:02x}.0", 10 + n, f"vdx{n}", f"serial-{n:04d}")
            # The emulated uevent socket holds ten datagrams (umockdev aborts on a
            # full one); give the agent's reader a turn, as a kernel's big buffer would.
            await asyncio.sleep(0)  # sync-ok: a yield, not a wait
        reports = 1
        while len(await host.next()) < 51:
            reports += 1
        assert reports <= 3, f"{reports} reports for one burst"
        source = agent._source
        assert isinstance(source, UdevSource)
        assert source.uevents >= 50 and source.scans <= 4, (source.uevents, source.scans)


async def once_print() -> None:
    guest = Guest(Testbed())
    every_bus(guest)
    # A child process inherits the testbed (UMOCKDEV_DIR) and the preload.
    cmd = [sys.executable, "-m", "diskname", "agent", "--once", "--print"]
    child = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    assert child.returncode == 0
    report = orjson.loads(out)
    assert _names(report["mapping"])[S_SCSI] == "/dev/sda", report
    assert len(report["mapping"]) == 4 and isinstance(report["disks"], list)


SCENARIOS: dict[str, Callable[[], Awaitable[None]]] = {
    f.__name__: f
    for f in (
        buses,
        buses_sysfs_only,
        no_serial,
        partitions_and_holders,
        hotplug,
        hotplug_kernel_uevents,
        burst_of_50,
        once_print,
    )
}


def main(name: str) -> None:
    async def run() -> None:
        async with asyncio.timeout(40):
            await SCENARIOS[name]()

    asyncio.run(run())
    print(f"{name}: ok")


if __name__ == "__main__":
    main(sys.argv[1])
