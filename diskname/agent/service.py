"""The agent's run loop: watch the source, keep the host told.

One connection at a time to the host; on each (re)connect a heartbeat and the
current mapping go out first. After that: a heartbeat every
``heartbeat_interval``, a ``disks-usage`` as soon as the mapping changes
(bursts coalesced), on ``refresh`` and every ``report_interval``.

``print_only`` writes each changed report to stdout instead of sending it;
``once`` prints the current one and returns (what an admin runs first when a
name looks wrong).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import sys
from dataclasses import dataclass
from typing import Any, Literal, TextIO, get_args

from .. import __version__
from ..compat import SLOTS, jsonlib
from ..compat.aio import TaskGroup, timeout
from ..config import setting
from ..protocol import agent_wire as aw
from ..protocol.errors import RemoteProtocolError
from ..streams import read_lines
from .records import build_mapping, mapping_json
from .sources.base import Source, SourceUnavailable
from .sources.sim import SimSource
from .transport import Backoff, Endpoint, Link, connect_forever, resolve_endpoint

log = logging.getLogger(__name__)

# A session earns a reset of the back-off when the host spoke in it or it
# lasted this long. A virtio-serial port opens even with no host behind it and
# then reads end-of-file at once: such sessions keep backing off to the cap.
_STABLE_SESSION = 1.0
# A burst is coalesced for at most this many `coalesce` periods.
_SETTLE_MAX = 20


Uevents = Literal["udev", "kernel"]


@dataclass(frozen=True, **SLOTS)
class AgentConfig:
    connect: str | None = setting(
        None,
        "talk to the host over this socket",
        metavar="unix:PATH|tcp:HOST:PORT",
        unset="the virtio-serial port",
    )
    channel: str | None = setting(
        None,
        "the virtio-serial port",
        metavar="PATH",
        unset="/dev/virtio-ports/ovirt-guest-agent.0, then com.redhat.rhevm.vdsm",
    )
    source: Literal["udev", "windows", "sim"] = setting(
        "udev",
        "where disks come from: udev, WMI (windows; what udev means on Windows), or the sim"
        " hypervisor's port",
    )
    sim_hw: str | None = setting(None, "--source sim: the sim hardware port", metavar="unix:PATH")
    report_interval: float = setting(60.0, "seconds between full reports")
    heartbeat_interval: float = setting(5.0, "seconds between heartbeats")
    name_delay: float = setting(0.0, "--source sim: seconds until a plugged disk shows")
    coalesce: float = setting(
        0.02, "seconds a burst of device changes is gathered into one report", flag=False
    )
    uevents: Uevents | None = setting(
        None, "which uevents to follow", unset="udev if udevd runs, else kernel"
    )
    once: bool = setting(False, "print the current mapping and exit")
    print_only: bool = setting(
        False, "print each changed mapping as a JSON line instead of sending it", flag="--print"
    )
    windows_service: bool = setting(
        False, "run under the Windows service control manager (docs/windows.md)"
    )


def make_source(config: AgentConfig) -> Source:
    """The source the config asks for; on Windows the default (udev) means the WMI source."""
    if config.source == "windows" or (config.source == "udev" and sys.platform == "win32"):
        from .sources.windows.query import WindowsSource

        return WindowsSource()
    if config.source == "sim":
        if not config.sim_hw:
            raise SourceUnavailable("--source sim needs --sim-hw unix:PATH")
        return SimSource(config.sim_hw, config.name_delay)
    if config.source == "udev" and sys.platform != "win32":
        from .sources.udev import UdevSource

        if config.uevents not in (None, *get_args(Uevents)):
            raise SourceUnavailable(f"uevents must be udev or kernel, not {config.uevents!r}")
        return UdevSource(monitor_source=config.uevents)
    raise SourceUnavailable(f"unknown source {config.source!r} (udev, windows or sim)")


def _send(link: Link, msg: aw.Message) -> None:
    link.write(aw.encode_message(msg))


class AgentService:
    def __init__(
        self, config: AgentConfig, source: Source | None = None, out: TextIO | None = None
    ) -> None:
        self.config = config
        self._endpoint: Endpoint = resolve_endpoint(config.connect, config.channel)
        self._source = source if source is not None else make_source(config)
        self._out = out
        self._wake = asyncio.Event()
        self._force = False
        self._host_spoke = False
        self.api_version = aw.AGENT_API_VERSION
        self.connections = 0

    async def run(self, ready: asyncio.Event | None = None) -> None:
        log.info(
            "diskname agent %s on Python %s, JSON by %s",
            __version__,
            platform.python_version(),
            jsonlib.BACKEND,
        )
        await self._source.start()
        try:
            if self.config.once:
                self._print(self.report(), indent=True)
                return
            async with TaskGroup() as tg:
                tg.create_task(self._watch_source(), name="agent-source")
                if self.config.print_only:
                    tg.create_task(self._print_reports(ready), name="agent-print")
                else:
                    tg.create_task(self._connect_loop(ready), name="agent-link")
        finally:
            await self._source.close()

    def current_mapping(self) -> dict[str, dict[str, Any]]:
        return mapping_json(build_mapping(self._source.snapshot()))

    def report(self) -> dict[str, Any]:
        """What ``--print`` shows: the mapping and the filesystems, as sent."""
        return {"mapping": self.current_mapping(), "disks": self._source.filesystems()}

    def _print(self, report: dict[str, Any], indent: bool = False) -> None:
        out = self._out or sys.stdout
        option = jsonlib.OPT_INDENT_2 if indent else 0
        out.write(jsonlib.dumps(report, option=option).decode() + "\n")
        out.flush()

    async def _print_reports(self, ready: asyncio.Event | None) -> None:
        last = None
        while True:
            report = self.report()
            if report["mapping"] != last:
                self._print(report)
                last = report["mapping"]
            if ready is not None:
                ready.set()
            await self._wake.wait()
            self._wake.clear()

    async def _watch_source(self) -> None:
        loop = asyncio.get_running_loop()
        quiet = self.config.coalesce
        while True:
            await self._source.wait_changed()
            # Let a burst of plugs settle into one report: wait until the source
            # has been quiet for `coalesce`, but never longer than _SETTLE_MAX of
            # those, so a guest that keeps changing is still reported.
            give_up = loop.time() + quiet * _SETTLE_MAX
            while loop.time() < give_up:
                try:
                    async with timeout(quiet):
                        await self._source.wait_changed()
                except TimeoutError:
                    break
            self._wake.set()

    async def _connect_loop(self, ready: asyncio.Event | None) -> None:
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        while True:
            link = await connect_forever(self._endpoint, backoff)
            self.connections += 1
            log.info("connected to host at %s", self._endpoint)
            if ready is not None:
                ready.set()
            started = loop.time()
            self._host_spoke = False
            try:
                await self._session(link)
            finally:
                link.close()
                await link.wait_closed()
            if self._host_spoke or loop.time() - started >= _STABLE_SESSION:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    async def _session(self, link: Link) -> None:
        self.api_version = aw.AGENT_API_VERSION
        _send(link, aw.Heartbeat(api_version=aw.AGENT_API_VERSION))
        async with TaskGroup() as tg:
            tasks = [
                tg.create_task(self._heartbeats(link)),
                tg.create_task(self._reports(link)),
            ]
            await self._read_commands(link)
            for task in tasks:
                task.cancel()

    async def _heartbeats(self, link: Link) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            _send(link, aw.Heartbeat(api_version=aw.AGENT_API_VERSION))

    async def _reports(self, link: Link) -> None:
        last: dict[str, dict[str, Any]] | None = None
        while True:
            mapping = self.current_mapping()
            if self._force or mapping != last:
                self._force = False
                _send(link, self._usage(mapping))
                last = mapping
            with contextlib.suppress(TimeoutError):
                async with timeout(self.config.report_interval):
                    await self._wake.wait()
                    self._wake.clear()
                    continue
            self._force = True

    def _usage(self, mapping: dict[str, dict[str, Any]]) -> aw.DisksUsage:
        if self.api_version < 1:
            # A legacy host: send only what the original agent sent.
            mapping = {key: {"name": entry["name"]} for key, entry in mapping.items()}
        disks = tuple(self._source.filesystems())
        return aw.DisksUsage(mapping=aw.parse_mapping(mapping), disks=disks)

    async def _read_commands(self, link: Link) -> None:
        async for line in read_lines(link.reader):
            if not isinstance(line, bytes):
                continue
            try:
                msg = aw.decode_message(line)
            except RemoteProtocolError as exc:
                log.warning("ignoring a bad line from the host: %s", exc.reason)
                continue
            self._host_spoke = True
            self._handle(msg)

    def _handle(self, msg: aw.Message) -> None:
        if isinstance(msg, aw.Refresh):
            self.api_version = min(msg.api_version, aw.AGENT_API_VERSION)
            self._force = True
            self._wake.set()
        elif isinstance(msg, aw.ApiVersion):
            self.api_version = min(msg.api_version, aw.AGENT_API_VERSION)
        else:
            log.debug("ignoring %r from the host", msg)
