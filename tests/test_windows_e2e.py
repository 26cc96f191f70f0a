"""A Windows guest's disks named end to end (SPEC §20, issue 24's acceptance 1).

Real PostgreSQL, the real engine (REST API, monitor, store), the real host
(``--hypervisor sim``, its qemu-ga channel in ``connect`` mode) and a scripted
qemu-ga that answers as qemu-ga does in a Windows guest (the shapes of
tests/data/windows/qga-*.json), built from the VM's virtual hardware as the
host's sim-hw port describes it: a virtio-blk disk is SCSI 0/0/0 with its own
PCI function as the "controller", a virtio-scsi disk sits behind a controller
no disk has, a SATA disk behind the AHCI function with zeroes for an address.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from diskname.engine.config import EngineConfig
from diskname.engine.service import EngineService
from diskname.host.hypervisors.sim import hw_path
from diskname.host.qga import qga_path
from diskname.protocol.serials import swap_pairs
from diskname.protocol.simhw import VirtualDisk, decode_state
from diskname.streams import close_writer

from .conftest import running_host, started, wait_until
from .rest import Rest
from .test_client import diskname
from .test_engine_web import CHROMIUM, chromium, open_page
from .test_host_qga import answer, fake_qemu_ga, sync_reply

pytestmark = pytest.mark.timeout(120)

SCSI_CONTROLLER = "0000:00:04.0"  # below the host's first disk slot: no disk has it
AHCI = "0000:00:1f.2"  # a function, not a disk's .0
HOSTILE = [
    "\\\\?\\GLOBALROOT\\Device\\Harddisk9\\DR9",
    "\\\\.\\PhysicalDrive1\\..\\C:",
    "\\\\.\\PhysicalDrive" + "9" * 300,
]


def drive(n: int) -> str:
    return f"\\\\.\\PhysicalDrive{n}"


@dataclass(frozen=True)
class Quirk:
    """What Windows makes of the n-th disk plugged: its serial, and a drive letter."""

    serial: Callable[[str], str]
    letter: str | None = None


# In plug order: the VM's first disk (its system disk), then FACTS §10's quirks, one a disk.
QUIRKS = [
    Quirk(lambda s: s, "C"),
    Quirk(lambda s: s + "   \u0000", "D"),  # padded with spaces and a NUL
    Quirk(lambda s: "0"),  # virtio-win#362
    Quirk(lambda s: "0"),
    Quirk(swap_pairs),  # an ATA serial as Windows 7 reads it
]


def pci(text: str) -> dict[str, int]:
    domain, bus, rest = text.split(":")
    slot, function = rest.split(".")
    return {"domain": int(domain, 16), "bus": int(bus, 16), "slot": int(slot, 16),
            "function": int(function, 16)}  # fmt: skip


class WindowsQga:
    """qemu-ga in a Windows guest whose disks are the VM's virtual hardware."""

    def __init__(self) -> None:
        self.disks: tuple[VirtualDisk, ...] = ()
        self.numbers: dict[str, int] = {}  # device id -> n of \\.\PhysicalDrive<n>
        self.hostile: list[str] = []
        self.held: tuple[VirtualDisk, ...] | None = None  # answers lagging the hardware

    @property
    def seen(self) -> tuple[VirtualDisk, ...]:
        return self.disks if self.held is None else self.held

    async def follow(self, path: Path) -> None:
        """Read the sim-hw port: the whole plugged-disk state, a line per change."""
        reader, writer = await asyncio.open_unix_connection(str(path))
        try:
            while line := await reader.readline():
                self.disks = decode_state(line).disks
                for disk in self.disks:
                    self.numbers.setdefault(disk.device_id, len(self.numbers))
        finally:
            await close_writer(writer)

    def address(self, disk: VirtualDisk) -> dict[str, Any]:
        n = self.numbers[disk.device_id]
        where: dict[str, Any] = {"bus-type": "scsi", "bus": 0, "target": 0, "unit": 0}
        if disk.iface == "virtio":
            where["pci-controller"] = pci(disk.address)
        elif disk.iface == "virtio_scsi":
            _, bus, target, unit = (int(x) for x in disk.address.split(":"))
            where.update(
                bus=bus, target=target, unit=unit, **{"pci-controller": pci(SCSI_CONTROLLER)}
            )
        else:
            assert disk.iface == "sata", disk
            where.update({"bus-type": "sata", "pci-controller": pci(AHCI)})
        return {**where, "dev": drive(n), "serial": QUIRKS[n].serial(disk.serial)}

    def get_disks(self) -> list[dict[str, Any]]:
        disks = [
            {
                "name": drive(self.numbers[d.device_id]),
                "partition": False,
                "address": self.address(d),
            }
            for d in self.seen
        ]
        return disks + [{"name": name, "partition": False} for name in self.hostile]

    def get_fsinfo(self) -> list[dict[str, Any]]:
        volumes = []
        for disk in self.seen:
            n = self.numbers[disk.device_id]
            if QUIRKS[n].letter:
                guid = uuid.uuid5(uuid.NAMESPACE_OID, disk.device_id)
                volumes.append({
                    "name": f"\\\\?\\Volume{{{guid}}}\\", "mountpoint": f"{QUIRKS[n].letter}:\\",
                    "type": "NTFS", "disk": [self.address(disk)],
                    "total-bytes": 1 << 30, "used-bytes": 1 << 20,
                })  # fmt: skip
        return volumes

    async def reply(self, cmd: dict[str, Any]) -> bytes:
        if cmd["execute"] == "guest-sync-delimited":
            return sync_reply(cmd)
        if cmd["execute"] == "guest-get-disks":
            return answer(self.get_disks())
        if cmd["execute"] == "guest-get-fsinfo":
            return answer(self.get_fsinfo())
        return orjson.dumps({"error": {"class": "CommandNotFound", "desc": "no"}}) + b"\n"


@contextlib.asynccontextmanager
async def windows_guest(host: Any, vm_id: str) -> AsyncIterator[WindowsQga]:
    guest = WindowsQga()
    hw = hw_path(host.config.channels_dir, vm_id)
    await wait_until(hw.exists)
    follower = asyncio.create_task(guest.follow(hw))
    try:
        async with fake_qemu_ga(qga_path(host.config.channels_dir, vm_id), guest.reply):
            yield guest
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


@contextlib.asynccontextmanager
async def engine(pg_dsn: str) -> AsyncIterator[tuple[Rest, EngineService]]:
    service = EngineService(EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=0.05))
    async with started(service):
        url = f"http://127.0.0.1:{service.http_port}"
        async with aiohttp.ClientSession(base_url=url) as http:
            yield Rest(http), service


async def test_a_windows_guest_through_the_real_host_and_engine(
    pg_dsn: str, short_dir: Path
) -> None:
    async with (
        running_host(short_dir, channel_mode="connect", qga_interval=0.1) as host,
        engine(pg_dsn) as (rest, service),
    ):
        body = {"name": "h1", "address": "127.0.0.1", "port": host.port}
        host_id = (await rest.ok("POST", "/api/hosts", body, status=201))["id"]
        vm_id = (await rest.ok("POST", "/api/vms", {"name": "win", "host": {"id": host_id}}, 201))[
            "id"
        ]
        await wait_until(lambda: host.registry.find(vm_id), timeout=15)
        async with windows_guest(host, vm_id) as guest:
            base = f"/api/vms/{vm_id}/diskattachments"
            (system,) = (await rest.ok("GET", base))["disk_attachment"]  # the VM's own disk
            plugged = {"S": system["id"]}
            for label, iface in [("A", "virtio"), ("B", "virtio"), ("C", "virtio_scsi"),
                                 ("D", "sata")]:  # fmt: skip
                plugged[label] = await rest.hotplug(vm_id, iface)
                await rest.wait_name(vm_id, plugged[label], timeout=15)
            await rest.wait_name(vm_id, system["id"])
            atts = {k: await rest.attachment(vm_id, v) for k, v in plugged.items()}
            assert {k: (a["logical_name"], a["logical_name_source"]) for k, a in atts.items()} == {
                "S": (drive(0), "serial"),
                "A": (drive(1), "serial"),  # trailing spaces and a NUL
                "B": (drive(2), "address"),  # "0", a virtio-blk disk at SCSI 0/0/0
                "C": (drive(3), "address"),  # "0", a virtio-scsi disk at 0:0:0:0
                "D": (drive(4), "serial"),  # byte-swapped
            }
            assert atts["C"]["interface"] == "virtio_scsi"
            for label in plugged:  # never another disk's name, not even for a moment
                history = (await rest.ok("GET", f"{base}/{plugged[label]}/history"))["history"]
                assert [h["logical_name"] for h in history] == [atts[label]["logical_name"]]

            # Its volumes are its mountpoints; the client and the page show the letters.
            assert "D:\\" in atts["A"]["guest"]["mountpoints"]
            assert "C:\\" in atts["S"]["guest"]["mountpoints"]
            assert all(
                p.endswith("\\") for a in atts.values() for p in a["guest"].get("mountpoints", [])
            )
            url = f"http://127.0.0.1:{service.http_port}"
            code, out, err = await diskname("disks", vm_id, "--url", url)
            assert code == 0, err
            assert f"{drive(1)} (D:)" in out and f"{drive(0)} (C:)" in out
            assert f"{drive(2)} (" not in out  # no volume, no letters
            if CHROMIUM is not None:
                await page_shows(url, f"name-{vm_id}-{plugged['A']}", f"{drive(1)} (D:)", short_dir)

            # The client finds a disk by its Windows name in any case.
            code, out, err = await diskname("history", vm_id, "\\\\.\\physicaldrive1", "--url", url)
            assert code == 0, err
            assert drive(1) in out and "serial" in out

            # Unplugged, the disk loses its name. qemu-ga's answers lag here: the host has
            # A's entry (A's serial, its PCI function, SCSI 0/0/0) and no A. That entry must
            # not name C, the virtio-scsi disk at 0:0:0:0.
            vm = host.registry.get(vm_id)
            guest.held = guest.disks
            await rest.ok("PUT", f"{base}/{plugged['A']}", {"active": False})
            await rest.wait_unnamed(vm_id, plugged["A"], timeout=15)
            await wait_until(lambda: _stored_hash(pg_dsn, vm_id, vm.hash), timeout=15)
            assert drive(1) in {e["name"] for e in vm.mapping.values()}
            assert (await rest.attachment(vm_id, plugged["C"]))["logical_name"] == drive(3)
            guest.held = None
            await wait_until(lambda: drive(1) not in {e["name"] for e in vm.mapping.values()})
            # A former name is found in the VM's history, in any case too.
            code, out, err = await diskname("history", vm_id, "\\\\.\\PHYSICALDRIVE1", "--url", url)
            assert code == 0 and f"it was disk {plugged['A']}" in err, (out, err)

            # Hostile names: refused one by one on the host and counted; nothing stored.
            before = dict(vm.rejected)
            guest.hostile = list(HOSTILE)
            for reason in ("too_long", "windows_namespace"):
                key = f"qga_bad_name_{reason}"
                grew = lambda k=key: vm.rejected.get(k, 0) > before.get(k, 0)  # noqa: E731
                await wait_until(grew, timeout=15)
            assert not service.metrics.names_refused  # the host passed none on to the engine
            metrics = await (await rest.http.get("/metrics")).text()
            assert "diskname_engine_guest_names_refused_total" in metrics

            expected = {"S": drive(0), "A": None, "B": drive(2), "C": drive(3), "D": drive(4)}

            async def names() -> dict[str, str | None]:
                return {
                    k: (await rest.attachment(vm_id, v))["logical_name"] for k, v in plugged.items()
                }

            await wait_until(lambda: _equal(names(), expected), timeout=15)
            for label, disk in plugged.items():  # each kept its own name throughout
                history = (await rest.ok("GET", f"{base}/{disk}/history"))["history"]
                names_seen = [h["logical_name"] for h in reversed(history)]
                assert names_seen == ([drive(1), None] if label == "A" else [expected[label]])


async def page_shows(url: str, element: str, text: str, profile: Path) -> None:
    """The engine's page, in a headless Chromium, shows ``text`` first in ``element``."""
    async with chromium(profile / "chromium") as ws, open_page(ws, url + "/") as page:
        shown = f"document.getElementById({element!r})?.textContent"
        starts = f"{shown}?.startsWith({text!r})"  # then the "in use" mark
        await wait_until(lambda: page.js(starts), timeout=20)


async def _stored_hash(dsn: str, vm_id: str, want: str) -> bool:
    """Whether the engine has stored the host's report with hash ``want``."""
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT hash = $2 FROM vms WHERE id = $1", vm_id, want))
    finally:
        await conn.close()


async def _equal(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected
