"""The udev source: every whole disk the kernel and udev see, kept current by uevents.

Enumeration and events go through libudev (pyudev). With udevd running, the
devices carry udev's properties (``ID_SERIAL``..., ``DEVLINKS``) and events
arrive once udev has processed a device. Without it (containers, minimal
guests) libudev shows only the kernel's properties, events come straight from
the kernel, and the serial is read from sysfs (FACTS §2).

Every block uevent marks the view stale and the next snapshot rescans. A
rescan of a guest's disks costs a few milliseconds and makes a removal, a
re-plug (a new ``DISKSEQ`` under the same name) and lost events (a full socket
buffer) all come right the same way. Nothing here polls: the monitor socket
and a watch on the mount table sit in the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
from collections.abc import Iterable, Mapping
from typing import IO, Any

from ..records import DeviceRecord
from .base import SourceUnavailable
from .sysfs import (
    Mount,
    bus_of,
    clean,
    id_path_pci,
    is_vm_disk,
    natural_key,
    parse_mountinfo,
    path_addresses,
    vpd_pg80_serial,
)

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
UDEV_CONTROL = "/run/udev/control"
SERIAL_PROPERTIES = ("ID_SCSI_SERIAL", "ID_SERIAL_SHORT", "ID_SERIAL")
SERIAL_ATTRIBUTES = ("serial", "device/serial")
MAX_HOLDERS = 64
RECEIVE_BUFFER = 8 << 20
BY_ID, BY_PATH = "/dev/disk/by-id/", "/dev/disk/by-path/"


def _read(sys_path: str, rel: str) -> bytes | None:
    try:
        with open(os.path.join(sys_path, rel), "rb") as f:
            return f.read(4096)
    except OSError:
        return None


def _text(sys_path: str, rel: str) -> str | None:
    return clean(_read(sys_path, rel))


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def disk_serial(props: Mapping[str, str], sys_path: str) -> str | None:
    """udev's serial if it has one, else what sysfs holds (SPEC §3 order)."""
    for key in SERIAL_PROPERTIES:
        if serial := clean(props.get(key)):
            return serial
    for rel in SERIAL_ATTRIBUTES:
        if serial := _text(sys_path, rel):
            return serial
    if serial := vpd_pg80_serial(_read(sys_path, "device/vpd_pg80")):
        return serial
    return _text(sys_path, "device/wwid")


def _int(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _devnum(device: Any) -> str | None:
    props = device.properties
    if props.get("MAJOR") and props.get("MINOR"):
        return f"{props['MAJOR']}:{props['MINOR']}"
    return _text(device.sys_path, "dev")


def _node(device: Any) -> str:
    return str(device.device_node or f"/dev/{device.sys_name}")


def _holder_node(path: str, name: str) -> str:
    dm_name = _text(path, "dm/name")
    return f"/dev/mapper/{dm_name}" if dm_name else f"/dev/{name}"


def holders(sys_paths: Iterable[str]) -> dict[str, str | None]:
    """Every device stacked on these (LVM, LUKS, md, transitively): node -> devnum."""
    found: dict[str, str | None] = {}
    queue = list(sys_paths)
    while queue and len(found) < MAX_HOLDERS:
        base = os.path.join(queue.pop(), "holders")
        for name in _listdir(base):
            path = os.path.join(base, name)
            node = _holder_node(path, name)
            if node not in found:
                found[node] = _text(path, "dev")
                queue.append(path)
    return found


class _Scan:
    """One pass over the block devices; mounts grouped by device number."""

    def __init__(self, context: Any, mounts: list[Mount]) -> None:
        self.context = context
        self.mounts: dict[str, list[Mount]] = {}
        for mount in mounts:
            self.mounts.setdefault(mount.devnum, []).append(mount)
        self.partitions: dict[str, list[Any]] = {}
        for part in context.list_devices(subsystem="block", DEVTYPE="partition"):
            parent = part.parent
            if parent is not None:
                self.partitions.setdefault(parent.sys_path, []).append(part)
        self.used: set[str] = set()

    def disks(self) -> list[DeviceRecord]:
        records = []
        for disk in self.context.list_devices(subsystem="block", DEVTYPE="disk"):
            # NVMe multipath paths (nvme0c0n1) are hidden; their namespace is listed.
            if is_vm_disk(disk.sys_name) and _text(disk.sys_path, "hidden") != "1":
                records.append(self.record(disk))
        return records

    def filesystems(self) -> list[Mount]:
        """One mount per filesystem on our disks: the whole one, else the shortest path."""
        chosen = []
        for devnum in sorted(self.used):
            mounts = self.mounts.get(devnum, [])
            if mounts:
                chosen.append(min(mounts, key=lambda m: (m.root != "/", len(m.path), m.path)))
        return chosen

    def record(self, disk: Any) -> DeviceRecord:
        props, sys_path = disk.properties, disk.sys_path
        parts = sorted(self.partitions.get(sys_path, []), key=lambda p: natural_key(_node(p)))
        stacked = holders([sys_path, *(p.sys_path for p in parts)])
        candidates = [_devnum(d) for d in (disk, *parts)] + list(stacked.values())
        devnums = {d for d in candidates if d is not None}
        self.used.update(devnums)
        pci, scsi = path_addresses(sys_path)
        links = sorted((props.get("DEVLINKS") or "").split())
        size = _int(_text(sys_path, "size"))
        return DeviceRecord(
            name=_node(disk),
            serial=disk_serial(props, sys_path),
            bus=bus_of(sys_path, disk.sys_name),
            address=pci or id_path_pci(props.get("ID_PATH")),
            scsi_address=scsi,
            diskseq=_int(clean(props.get("DISKSEQ")) or _text(sys_path, "diskseq")),
            by_id=tuple(link for link in links if link.startswith(BY_ID)),
            by_path=next((link for link in links if link.startswith(BY_PATH)), None),
            size=None if size is None else size * 512,
            partitions=tuple(_node(p) for p in parts),
            holders=tuple(sorted(stacked)),
            mountpoints=tuple(sorted({m.path for d in devnums for m in self.mounts.get(d, [])})),
        )


def default_monitor_source() -> str:
    """``udev`` when udevd runs (its control socket exists), else ``kernel``."""
    return "udev" if os.path.exists(UDEV_CONTROL) else "kernel"


class UdevSource:
    """A :class:`~.base.Source` over libudev, sysfs and the mount table."""

    def __init__(self, monitor_source: str | None = None, mountinfo: str = MOUNTINFO) -> None:
        self.monitor_source = monitor_source or default_monitor_source()
        self._mountinfo = mountinfo
        self._context: Any = None
        self._monitor: Any = None
        self._mount_file: IO[bytes] | None = None
        self._mount_poll: select.epoll | None = None
        self._records: list[DeviceRecord] = []
        self._fs: list[Mount] = []
        self._stale = True
        self._changed = asyncio.Event()
        self.uevents = 0
        self.scans = 0

    async def start(self) -> None:
        try:
            import pyudev

            self._context = pyudev.Context()
        except ImportError as exc:
            raise SourceUnavailable(
                f"libudev is not available ({exc}): install python3-pyudev (or pip install pyudev)"
            ) from None
        loop = asyncio.get_running_loop()
        self._watch_uevents(loop, pyudev)
        self._watch_mounts(loop)
        self.snapshot()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        if self._monitor is not None:
            loop.remove_reader(self._monitor.fileno())
            self._monitor = None
        if self._mount_poll is not None:
            loop.remove_reader(self._mount_poll.fileno())
            self._mount_poll.close()
            self._mount_poll = None
        if self._mount_file is not None:
            self._mount_file.close()
            self._mount_file = None

    def snapshot(self) -> list[DeviceRecord]:
        if self._stale and self._context is not None:
            self._stale = False
            self._rescan()
        return list(self._records)

    def filesystems(self) -> list[dict[str, Any]]:
        usage = []
        for mount in self._fs:
            try:
                st = os.statvfs(mount.path)
            except OSError:
                continue
            total = st.f_blocks * st.f_frsize
            used = (st.f_blocks - st.f_bfree) * st.f_frsize
            usage.append({"path": mount.path, "fs": mount.fstype, "total": total, "used": used})
        return usage

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    def _rescan(self) -> None:
        try:
            with open(self._mountinfo, encoding="utf-8", errors="replace") as f:
                mounts = parse_mountinfo(f.read())
        except OSError:
            mounts = []
        scan = _Scan(self._context, mounts)
        self._records = sorted(scan.disks(), key=lambda r: natural_key(r.name))
        self._fs = scan.filesystems()
        self.scans += 1

    def _stale_now(self) -> None:
        self._stale = True
        self._changed.set()

    def _watch_uevents(self, loop: asyncio.AbstractEventLoop, pyudev: Any) -> None:
        try:
            monitor = pyudev.Monitor.from_netlink(self._context, source=self.monitor_source)
            monitor.filter_by("block")
            with contextlib.suppress(OSError):
                monitor.set_receive_buffer_size(RECEIVE_BUFFER)  # needs CAP_NET_ADMIN
            monitor.start()
        except (OSError, ValueError) as exc:
            log.warning("no block uevents (%s): changes show at the periodic report", exc)
            return
        self._monitor = monitor
        loop.add_reader(monitor.fileno(), self._on_uevent)
        log.info("watching block uevents from %s", self.monitor_source)

    def _on_uevent(self) -> None:
        while True:
            try:
                device = self._monitor.poll(timeout=0)
            except OSError as exc:
                # ENOBUFS: events were lost; the rescan below catches up anyway.
                log.debug("uevent receive failed: %s", exc)
                break
            if device is None:
                break
            self.uevents += 1
        self._stale_now()

    def _watch_mounts(self, loop: asyncio.AbstractEventLoop) -> None:
        # The mount table signals a change as POLLPRI|POLLERR while it always
        # reads as ready; an epoll set asking for POLLPRI only turns that into
        # a descriptor the loop can wait on without spinning.
        poll = select.epoll()
        try:
            table = open(self._mountinfo, "rb")  # noqa: SIM115 (kept open until close())
        except OSError as exc:
            log.debug("not watching mounts in %s: %s", self._mountinfo, exc)
            poll.close()
            return
        try:
            poll.register(table.fileno(), select.EPOLLPRI)
        except OSError as exc:  # a plain file (tests) cannot be watched
            log.debug("not watching mounts in %s: %s", self._mountinfo, exc)
            table.close()
            poll.close()
            return
        self._mount_file, self._mount_poll = table, poll
        loop.add_reader(poll.fileno(), self._on_mounts)

    def _on_mounts(self) -> None:
        assert self._mount_poll is not None
        self._mount_poll.poll(0)
        self._stale_now()
