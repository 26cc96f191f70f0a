"""The simulated guest kernel: turns the sim hardware state into disks.

The host (``--hypervisor sim``) tells us over its hardware port which virtual
disks are plugged. We play the Linux kernel: pick the lowest free name per
driver, hand out an ever-growing ``diskseq``, and make a new disk visible
only after ``name_delay`` seconds, as udev does, so the race between the
hypervisor's view and the guest's view is real. Each disk has the size the
host gives it and udev's by-id link; its partitions, mounts and holders are
whatever layout the host's state asks for (SPEC §17).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from ...compat.aio import timeout
from ...protocol.errors import RemoteProtocolError
from ...protocol.simhw import GuestLayout, HardwareState, VirtualDisk, decode_state
from ...streams import read_lines
from ..records import DeviceRecord
from ..transport import Backoff, connect_forever, parse_endpoint

log = logging.getLogger(__name__)


def disk_letters(index: int) -> str:
    """Kernel disk suffixes: 0 -> a, 25 -> z, 26 -> aa, 27 -> ab..."""
    out = ""
    index += 1
    while index > 0:
        index, rem = divmod(index - 1, 26)
        out = chr(ord("a") + rem) + out
    return out


def partition_name(disk: str, number: int) -> str:
    """A partition's node, as the kernel names it: ``/dev/vdb1``, ``/dev/nvme0n1p1``."""
    return f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"


def with_layout(record: DeviceRecord, layout: GuestLayout | None) -> DeviceRecord:
    """The record as the guest sees it once ``layout`` is made on the disk."""
    if layout is None:
        return record
    return dataclasses.replace(
        record,
        partitions=tuple(partition_name(record.name, n + 1) for n in range(layout.partitions)),
        mountpoints=tuple(sorted(set(layout.mountpoints))),
        holders=tuple(sorted(set(layout.holders))),
    )


def _name(iface: str, index: int) -> str:
    if iface == "virtio":
        return f"/dev/vd{disk_letters(index)}"
    if iface == "nvme":
        return f"/dev/nvme{index}n1"
    return f"/dev/sd{disk_letters(index)}"


_FAMILY = {"virtio": "vd", "virtio_scsi": "sd", "sata": "sd", "nvme": "nvme"}
# virtio-blk hands the guest at most 20 bytes of serial (FACTS §1); ATA's field is
# 20 characters too. A longer serial (a direct LUN's) arrives cut short.
SERIAL_LIMIT = {"virtio": 20, "sata": 20}


def guest_serial(iface: str, serial: str) -> str:
    """The serial as the guest kernel shows it for a disk on ``iface``."""
    limit = SERIAL_LIMIT.get(iface)
    return serial[:limit] if limit else serial


def address_order(disk: VirtualDisk) -> tuple[int, tuple[int, ...], str]:
    """Where a kernel finds a disk when it probes at boot: by bus, then address."""
    parts = disk.address.replace(".", ":").split(":")
    numbers = tuple(
        int(p, 16) for p in parts if p and all(c in "0123456789abcdefABCDEF" for c in p)
    )
    return (0 if disk.iface in ("virtio", "nvme") else 1, numbers, disk.device_id)


_BY_ID = {
    "virtio": "virtio-{}",
    "virtio_scsi": "scsi-0QEMU_QEMU_HARDDISK_{}",
    "sata": "ata-QEMU_HARDDISK_{}",
    "nvme": "nvme-QEMU_NVMe_Ctrl_{}",
}


class SimKernel:
    """Name and diskseq assignment, without timers or I/O."""

    def __init__(self) -> None:
        self._used: dict[str, set[int]] = {family: set() for family in _FAMILY.values()}
        self._index: dict[str, tuple[str, int]] = {}
        self._diskseq = 0

    def plug(self, disk: VirtualDisk) -> DeviceRecord:
        family = _FAMILY[disk.iface]
        used = self._used[family]
        index = next(i for i in range(len(used) + 1) if i not in used)
        used.add(index)
        self._index[disk.device_id] = (family, index)
        self._diskseq += 1
        serial = guest_serial(disk.iface, disk.serial)
        return DeviceRecord(
            name=_name(disk.iface, index),
            serial=serial,
            bus=disk.iface,
            address=disk.address or None,
            diskseq=self._diskseq,
            size=disk.size,
            by_id=(f"/dev/disk/by-id/{_BY_ID[disk.iface].format(serial)}",),
        )

    def unplug(self, device_id: str) -> None:
        family, index = self._index.pop(device_id)
        self._used[family].discard(index)


class SimSource:
    """A :class:`~.base.Source` fed by the host's sim hardware port.

    With ``hw_address`` None it follows nothing: the caller feeds :meth:`apply`
    itself (the bench's light guests, which live in the host process), and
    ``on_change`` hears of every disk that appears or goes.
    """

    def __init__(
        self,
        hw_address: str | None,
        name_delay: float = 0.0,
        boot_timeout: float = 1.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._endpoint = parse_endpoint(hw_address) if hw_address is not None else None
        self._on_change = on_change
        self._boot_timeout = boot_timeout
        self._boot = asyncio.Event()
        self._delay = name_delay
        self._kernel = SimKernel()
        self._plugged: dict[str, VirtualDisk] = {}
        self._visible: dict[str, DeviceRecord] = {}
        self._layouts: Mapping[str, GuestLayout] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._changed = asyncio.Event()
        self._booted = False
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Start following the hardware port; wait briefly for the boot state.

        A real kernel knows its disks before the agent starts. Waiting for the
        first state (bounded, as the host may not be up) keeps the agent from
        reporting an empty mapping that the next report would undo.
        """
        if self._endpoint is None:
            return
        self._task = asyncio.create_task(self._follow(), name=f"sim-hw {self._endpoint}")
        with contextlib.suppress(TimeoutError):
            async with timeout(self._boot_timeout):
                await self._boot.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def snapshot(self) -> list[DeviceRecord]:
        shown = [with_layout(r, self._layouts.get(d)) for d, r in self._visible.items()]
        return sorted(shown, key=lambda r: r.name)

    def filesystems(self) -> list[dict[str, Any]]:
        return []  # simulated disks hold no filesystems

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    async def _follow(self) -> None:
        assert self._endpoint is not None
        backoff = Backoff()
        while True:
            link = await connect_forever(self._endpoint, backoff)
            backoff.reset()  # a socket that accepts is the host itself
            self.connected.set()
            try:
                await self._read_states(link.reader)
            finally:
                self.connected.clear()
                link.close()
                await link.wait_closed()
            await asyncio.sleep(backoff.next())

    async def _read_states(self, reader: asyncio.StreamReader) -> None:
        async for line in read_lines(reader):
            if not isinstance(line, bytes):
                continue
            try:
                self.apply(decode_state(line))
            except RemoteProtocolError as exc:
                log.warning("ignoring hardware state: %s", exc)

    def apply(self, state: HardwareState) -> None:
        """Bring the kernel's view in line with the plugged hardware.

        The first state after start is the boot: those disks are there at once.
        """
        boot, self._booted = not self._booted, True
        self._boot.set()
        disks = list(state.disks)
        if boot:
            # A kernel probes its disks at boot in bus and address order, not in
            # the order they were once hot-plugged; names can differ from before.
            disks.sort(key=address_order)
            if disks != list(state.disks):
                log.info(
                    "boot: naming %d disks in bus/address order, as a kernel does; disks "
                    "hot-plugged out of address order may get other names than before",
                    len(disks),
                )
        wanted = {disk.device_id: disk for disk in disks}
        if dict(state.layouts) != dict(self._layouts):
            self._layouts = dict(state.layouts)
            self._notify()
        for device_id, disk in list(self._plugged.items()):
            if wanted.get(device_id) != disk:
                self._remove(device_id)
        for device_id, disk in wanted.items():
            if device_id not in self._plugged:
                self._add(disk, immediate=boot or self._delay <= 0)

    def _remove(self, device_id: str) -> None:
        del self._plugged[device_id]
        self._kernel.unplug(device_id)
        timer = self._timers.pop(device_id, None)
        if timer is not None:
            timer.cancel()
        if self._visible.pop(device_id, None) is not None:
            self._notify()

    def _add(self, disk: VirtualDisk, *, immediate: bool) -> None:
        self._plugged[disk.device_id] = disk
        record = self._kernel.plug(disk)
        if immediate:
            self._show(disk.device_id, record)
            return
        loop = asyncio.get_running_loop()
        self._timers[disk.device_id] = loop.call_later(
            self._delay, self._show, disk.device_id, record
        )

    def _show(self, device_id: str, record: DeviceRecord) -> None:
        self._timers.pop(device_id, None)
        self._visible[device_id] = record
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        if self._on_change is not None:
            self._on_change()
