"""The Windows source: CIM asked through PowerShell, device changes as events.

Two PowerShell processes, both run with ``-EncodedCommand`` so nothing needs
quoting: :data:`QUERY_SCRIPT` prints the disks, their sizes and partitions as
one JSON object (read by :func:`.wmi.records_from_cim`); :data:`WATCH_SCRIPT`
stays running and prints a line for every ``Win32_DeviceChangeEvent`` and
``Win32_VolumeChangeEvent`` (device arrival and removal, volumes mounted or
given a letter). Each line marks the view stale and a new query follows;
bursts are coalesced because lines that arrive during a query cause one more
query, not one each. A rescan every ``rescan`` seconds is the fallback should
the watcher die or miss something; a dead watcher is restarted with back-off.

PowerShell and CIM ship with every Windows the agent supports, so nothing is
compiled or installed; the Python side is plain asyncio subprocesses, and the
tests run it on Linux with a stand-in for ``powershell.exe``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from ....compat import jsonlib
from ....compat.aio import timeout
from ...records import DeviceRecord
from ..base import SourceUnavailable
from .wmi import records_from_cim

log = logging.getLogger(__name__)

POWERSHELL = ("powershell.exe", "-NoLogo", "-NoProfile", "-NonInteractive")
QUERY_TIMEOUT = 120.0
MAX_ANSWER = 16 << 20
WATCH_RESTART_CAP = 60.0

QUERY_SCRIPT = r"""
$ErrorActionPreference = 'Stop'
[Console]::OutputEncoding = [Text.Encoding]::UTF8
$disks = @(Get-CimInstance -ClassName Win32_DiskDrive | ForEach-Object {
    $parent = $null; $location = $null
    try {
        $parent = (Get-PnpDeviceProperty -InstanceId $_.PNPDeviceID `
            -KeyName DEVPKEY_Device_Parent).Data
        $location = (Get-PnpDeviceProperty -InstanceId $parent `
            -KeyName DEVPKEY_Device_LocationInfo).Data
    } catch {}
    [pscustomobject]@{
        Index = $_.Index; DeviceID = $_.DeviceID; SerialNumber = $_.SerialNumber
        InterfaceType = $_.InterfaceType; PNPDeviceID = $_.PNPDeviceID
        SCSIPort = $_.SCSIPort; SCSIBus = $_.SCSIBus; SCSITargetId = $_.SCSITargetId
        SCSILogicalUnit = $_.SCSILogicalUnit; Size = $_.Size
        Parent = $parent; ParentLocation = $location
    }
})
$ns = 'root/Microsoft/Windows/Storage'
$sizes = @(Get-CimInstance -Namespace $ns -ClassName MSFT_Disk | Select-Object Number, Size)
$parts = @(Get-CimInstance -Namespace $ns -ClassName MSFT_Partition |
    Select-Object DiskNumber, AccessPaths)
$answer = @{disks = $disks; sizes = $sizes; partitions = $parts}
ConvertTo-Json -Compress -Depth 4 -InputObject $answer
"""

WATCH_SCRIPT = r"""
$ErrorActionPreference = 'Stop'
[Console]::OutputEncoding = [Text.Encoding]::UTF8
Register-CimIndicationEvent -ClassName Win32_DeviceChangeEvent -SourceIdentifier dn-dev | Out-Null
Register-CimIndicationEvent -ClassName Win32_VolumeChangeEvent -SourceIdentifier dn-vol | Out-Null
[Console]::Out.WriteLine('ready'); [Console]::Out.Flush()
while ($true) {
    $event = Wait-Event
    Remove-Event -EventIdentifier $event.EventIdentifier
    [Console]::Out.WriteLine('changed'); [Console]::Out.Flush()
}
"""


def encoded(script: str) -> list[str]:
    """``-EncodedCommand`` and the script as PowerShell wants it (base64 of UTF-16LE)."""
    return ["-EncodedCommand", base64.b64encode(script.encode("utf-16-le")).decode("ascii")]


class WindowsSource:
    """A :class:`~..base.Source` over CIM: records from queries, wake-ups from the watcher."""

    def __init__(self, powershell: Sequence[str] = POWERSHELL, rescan: float = 60.0) -> None:
        self._powershell = list(powershell)
        self._rescan = rescan
        self._records: list[DeviceRecord] = []
        self._stale = asyncio.Event()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.queries = 0
        self.watch_lines = 0

    async def start(self) -> None:
        try:
            self._records = await self._query()
        except (OSError, ValueError) as exc:
            raise SourceUnavailable(f"cannot ask Windows for its disks: {exc}") from exc
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch()), loop.create_task(self._refresh())]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def snapshot(self) -> list[DeviceRecord]:
        return list(self._records)

    def filesystems(self) -> list[dict[str, Any]]:
        return []

    async def wait_changed(self) -> None:
        await self._changed.wait()
        self._changed.clear()

    async def _query(self) -> list[DeviceRecord]:
        proc = await asyncio.create_subprocess_exec(
            *self._powershell,
            *encoded(QUERY_SCRIPT),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with timeout(QUERY_TIMEOUT):
                out, err = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        self.queries += 1
        if proc.returncode != 0 or len(out) > MAX_ANSWER:
            raise ValueError(f"the CIM query failed ({proc.returncode}): {err[-500:]!r}")
        try:
            return records_from_cim(jsonlib.loads(out.decode("utf-8-sig")))
        except (UnicodeDecodeError, jsonlib.JSONDecodeError) as exc:
            raise ValueError(f"the CIM query printed no JSON: {exc}") from None

    async def _refresh(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with timeout(self._rescan):
                    await self._stale.wait()
            self._stale.clear()
            try:
                records = await self._query()
            except (OSError, ValueError, TimeoutError) as exc:
                log.warning("cannot read the disks: %s", exc)
                continue
            if records != self._records:
                self._records = records
                self._changed.set()

    async def _watch(self) -> None:
        delay = 1.0
        while True:
            try:
                await self._follow()
            except OSError as exc:
                log.warning("cannot watch device changes: %s", exc)
            # Whatever happened while it was down: look again.
            self._stale.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, WATCH_RESTART_CAP)

    async def _follow(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self._powershell,
            *encoded(WATCH_SCRIPT),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        try:
            while line := await proc.stdout.readline():
                self.watch_lines += 1
                if line.strip() == b"changed":
                    self._stale.set()
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        log.warning("the device watcher ended (%s); restarting it", proc.returncode)
