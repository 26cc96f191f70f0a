"""The agent's run loop: watch the source, keep the host told.

One connection at a time to the host; on each (re)connect a heartbeat and the
current mapping go out first. After that: a heartbeat every
``heartbeat_interval``, a ``disks-usage`` as soon as the mapping changes
(bursts coalesced), on ``refresh`` and every ``report_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from ..protocol import agent_wire as aw
from ..protocol.errors import RemoteProtocolError
from ..streams import close_writer, read_lines
from .records import build_mapping, mapping_json
from .sources.base import Source, SourceUnavailable
from .sources.sim import SimSource
from .transport import Backoff, Endpoint, connect_forever, resolve_endpoint

log = logging.getLogger(__name__)

# A session shorter than this does not earn a reset of the back-off, so a host
# that accepts and drops at once is not hammered.
_STABLE_SESSION = 1.0


@dataclass(frozen=True, slots=True)
class AgentConfig:
    connect: str | None = None
    channel: str | None = None
    source: str = "udev"
    sim_hw: str | None = None
    report_interval: float = 60.0
    heartbeat_interval: float = 5.0
    name_delay: float = 0.0
    coalesce: float = 0.02


def make_source(config: AgentConfig) -> Source:
    """The source the config asks for."""
    if config.source == "sim":
        if not config.sim_hw:
            raise SourceUnavailable("--source sim needs --sim-hw unix:PATH")
        return SimSource(config.sim_hw, config.name_delay)
    raise SourceUnavailable(f"source {config.source!r} is not available yet (use sim)")


class _Link:
    """One live connection to the host; a failed write just ends it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, msg: aw.Message) -> None:
        if self.writer.is_closing():
            return
        try:
            self.writer.write(aw.encode_message(msg))
        except (ConnectionError, OSError):
            self.writer.close()


class AgentService:
    def __init__(self, config: AgentConfig, source: Source | None = None) -> None:
        self.config = config
        self._endpoint: Endpoint = resolve_endpoint(config.connect, config.channel)
        self._source = source if source is not None else make_source(config)
        self._wake = asyncio.Event()
        self._force = False
        self.api_version = aw.AGENT_API_VERSION
        self.connections = 0

    async def run(self, ready: asyncio.Event | None = None) -> None:
        await self._source.start()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._watch_source(), name="agent-source")
                tg.create_task(self._connect_loop(ready), name="agent-link")
        finally:
            await self._source.close()

    def current_mapping(self) -> dict[str, dict[str, Any]]:
        return mapping_json(build_mapping(self._source.snapshot()))

    async def _watch_source(self) -> None:
        while True:
            await self._source.wait_changed()
            # Let a burst of plugs settle into one report.
            await asyncio.sleep(self.config.coalesce)
            self._wake.set()

    async def _connect_loop(self, ready: asyncio.Event | None) -> None:
        backoff = Backoff()
        loop = asyncio.get_running_loop()
        while True:
            reader, writer = await connect_forever(self._endpoint, backoff)
            self.connections += 1
            log.info("connected to host at %s", self._endpoint)
            if ready is not None:
                ready.set()
            started = loop.time()
            try:
                await self._session(_Link(reader, writer))
            finally:
                await close_writer(writer)
            if loop.time() - started >= _STABLE_SESSION:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    async def _session(self, link: _Link) -> None:
        self.api_version = aw.AGENT_API_VERSION
        link.send(aw.Heartbeat(api_version=aw.AGENT_API_VERSION))
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(self._heartbeats(link)),
                tg.create_task(self._reports(link)),
            ]
            await self._read_commands(link)
            for task in tasks:
                task.cancel()

    async def _heartbeats(self, link: _Link) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            link.send(aw.Heartbeat(api_version=aw.AGENT_API_VERSION))

    async def _reports(self, link: _Link) -> None:
        last: dict[str, dict[str, Any]] | None = None
        while True:
            mapping = self.current_mapping()
            if self._force or mapping != last:
                self._force = False
                link.send(self._usage(mapping))
                last = mapping
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.report_interval):
                    await self._wake.wait()
                    self._wake.clear()
                    continue
            self._force = True

    def _usage(self, mapping: dict[str, dict[str, Any]]) -> aw.DisksUsage:
        if self.api_version < 1:
            # A legacy host: send only what the original agent sent.
            mapping = {key: {"name": entry["name"]} for key, entry in mapping.items()}
        return aw.DisksUsage(mapping=aw.parse_mapping(mapping))

    async def _read_commands(self, link: _Link) -> None:
        async for line in read_lines(link.reader):
            if not isinstance(line, bytes):
                continue
            try:
                msg = aw.decode_message(line)
            except RemoteProtocolError as exc:
                log.warning("ignoring a bad line from the host: %s", exc.reason)
                continue
            self._handle(msg)

    def _handle(self, msg: aw.Message) -> None:
        match msg:
            case aw.Refresh(api_version=version):
                self.api_version = min(version, aw.AGENT_API_VERSION)
                self._force = True
                self._wake.set()
            case aw.ApiVersion(api_version=version):
                self.api_version = min(version, aw.AGENT_API_VERSION)
            case _:
                log.debug("ignoring %r from the host", msg)
