"""One agent channel per VM: the guest agent line protocol over a UNIX socket.

Everything the guest sends is untrusted. A line that is too long, cut short,
not UTF-8, not JSON, of the wrong shape or of an unknown kind is dropped and
counted in ``Vm.rejected`` under its reason; so is everything beyond the
per-second message budget (``flood``). The channel itself stays up.

A flood never costs the guest its latest state: of the lines dropped for the
budget, the last one that may be a ``disks-usage`` is kept (one line, bounded
by the line cap) and applied as soon as the budget allows, so the mapping the
guest sent last is the one the host ends up with (SPEC §12).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..logctx import log_context
from ..protocol import agent_wire as aw
from ..protocol.agent_wire import AGENT_API_VERSION
from ..protocol.errors import RemoteProtocolError
from ..protocol.lines import MAX_LINE, LineDecoder, LineEvent, Oversized, Truncated
from ..protocol.names import keep_valid
from ..streams import read_lines
from .serving import Connections, dial_forever
from .vm import AGENT, Vm

MappingSink = Callable[[dict[str, dict[str, Any]]], None]

log = logging.getLogger(__name__)

CHANNEL_SUFFIX = ".ovirt-guest-agent.0"
BACKOFF_INITIAL = 0.05
BACKOFF_CAP = 2.0
MAX_UNREAD = 64 * 1024


def channel_path(channels_dir: Path, vm_id: str) -> Path:
    return channels_dir / f"{vm_id}{CHANNEL_SUFFIX}"


class RateLimit:
    """At most ``limit`` messages per one-second window."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._window = -1
        self._count = 0

    def allow(self, now: float) -> bool:
        window = int(now)
        if window != self._window:
            self._window, self._count = window, 0
        self._count += 1
        return self._count <= self.limit

    def next_window(self, now: float) -> float:
        """When the budget is full again."""
        return float(int(now) + 1)


class AgentChannel:
    """The host end of one VM's agent channel (``listen`` or ``connect`` mode).

    ``publish(mapping)`` receives every valid mapping the agent sends.
    """

    def __init__(
        self,
        vm: Vm,
        path: Path,
        mode: str,
        publish: MappingSink,
        rate_limit: int = 1000,
        timeout: float = 15.0,
    ) -> None:
        if mode not in ("listen", "connect"):
            raise ValueError(f"channel mode must be listen or connect, not {mode!r}")
        self.vm, self.path, self.mode = vm, path, mode
        self.protocol = GuestProtocol(vm, publish, RateLimit(rate_limit))
        self._held_timer: asyncio.TimerHandle | None = None
        # Fires when the agent may have been silent for ``timeout`` (SPEC §17).
        self.timeout = timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._current: asyncio.StreamWriter | None = None
        self._decoder: LineDecoder | None = None
        self._connections = Connections()
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Serve the channel until cancelled; every log line in it names the VM."""
        with log_context(vm_id=self.vm.id):
            try:
                if self.mode == "listen":
                    await self._listen()
                else:
                    await self._connect_forever()
            finally:
                await self._close_all()

    async def _listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a socket left behind by a previous run
        server = await asyncio.start_unix_server(self._accepted, path=str(self.path))
        try:
            await asyncio.Future()
        finally:
            server.close()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._current is not None:
            log.info("VM %s: a newer agent connection replaces the old one", self.vm.id)
            self._current.close()
        await self._connections.serve(writer, self._serve(reader, writer))

    async def _connect_forever(self) -> None:
        await dial_forever(self.path, self._serve, BACKOFF_INITIAL, BACKOFF_CAP)

    @property
    def buffered(self) -> int:
        """Bytes held for the current connection's unfinished line (bounded)."""
        return self._decoder.buffered if self._decoder is not None else 0

    async def _close_all(self) -> None:
        if self._current is not None:
            self._current.close()
        await self._connections.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._current = writer
        self.connected.set()
        loop = asyncio.get_running_loop()
        self._decoder = decoder = LineDecoder(MAX_LINE)
        try:
            self._send(writer, self.protocol.connected())
            async for event in read_lines(reader, decoder):
                self._send(writer, self.protocol.receive(event, loop.time()))
                self._arm_held(loop, writer)
                self._arm_watchdog(loop)
        finally:
            if self._current is writer:
                self._current = None
                self.connected.clear()
                self.vm.source_gone(AGENT)
                if self._watchdog is not None:
                    self._watchdog.cancel()
                    self._watchdog = None
            if self._held_timer is not None:
                self._held_timer.cancel()
                self._held_timer = None

    def _arm_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake when the agent's heartbeat may be overdue (one timer, never re-armed per line)."""
        if self._watchdog is not None:  # armed already: every line lands here
            return
        due = self.vm.freshness.next_expiry(self.timeout)
        if due is None:
            return

        def fire() -> None:
            self._watchdog = None
            self.vm.expire_sources(loop.time(), self.timeout)
            self._arm_watchdog(loop)

        # A hair late, so the expiry finds the agent silent for more than ``timeout``.
        self._watchdog = loop.call_at(due + 0.001, fire)

    def _arm_held(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter) -> None:
        """A line was held back by the budget: apply it once the budget allows."""
        when = self.protocol.held_until(loop.time())
        if when is None or self._held_timer is not None:
            return

        def fire() -> None:
            self._held_timer = None
            self._send(writer, self.protocol.release_held(loop.time()))
            self._arm_held(loop, writer)

        self._held_timer = loop.call_at(when, fire)

    def _send(self, writer: asyncio.StreamWriter, messages: list[aw.Message]) -> None:
        for msg in messages:
            if writer.is_closing():
                return
            if writer.transport.get_write_buffer_size() > MAX_UNREAD:
                # The guest does not read what we send; do not let it grow our memory.
                self.vm.reject("unread_output")
                return
            writer.write(aw.encode_message(msg))


class GuestProtocol:
    """The host side of one VM's agent protocol, without I/O.

    Feed it framing events (lines, :class:`Oversized`, :class:`Truncated`);
    it updates the VM, counts what it rejects, and returns what to send back.
    """

    def __init__(self, vm: Vm, publish: MappingSink, rate: RateLimit) -> None:
        self.vm, self._publish, self._rate = vm, publish, rate
        self._sent_version: int | None = None
        # The last line the budget dropped that may be a disks-usage.
        self._held: bytes | None = None

    def connected(self) -> list[aw.Message]:
        """A new connection: ask the agent to send everything."""
        self._sent_version = None
        return [aw.Refresh(api_version=AGENT_API_VERSION)]

    def receive(self, event: LineEvent, now: float) -> list[aw.Message]:
        if isinstance(event, Oversized):
            self.vm.reject("oversized")
        elif isinstance(event, Truncated):
            self.vm.reject("truncated")
        elif isinstance(event, bytes):
            if not self._rate.allow(now):
                self.vm.reject("flood")
                if b'"disks-usage"' in event:
                    self._held = event  # keep the latest; an older one is stale anyway
                return []
            out = self.release_held(now, budgeted=True)
            return out + self._line(event, now)
        return []

    def held_until(self, now: float) -> float | None:
        """When a held line can be applied, or None if nothing is held."""
        return None if self._held is None else self._rate.next_window(now)

    def release_held(self, now: float, *, budgeted: bool = False) -> list[aw.Message]:
        """Apply the held line if the budget allows (``budgeted``: a slot was just taken)."""
        if self._held is None:
            return []
        if not budgeted and not self._rate.allow(now):
            return []
        line, self._held = self._held, None
        return self._line(line, now)

    def _line(self, line: bytes, now: float) -> list[aw.Message]:
        try:
            msg = aw.decode_message(line)
        except RemoteProtocolError as exc:
            self.vm.reject(exc.reason)
            return []
        return self._handle(msg, now)

    def _handle(self, msg: aw.Message, now: float) -> list[aw.Message]:
        vm = self.vm
        match msg:
            case aw.Heartbeat(api_version=reported):
                version = vm.heartbeat(now, reported)
                if version != self._sent_version:
                    self._sent_version = version
                    return [aw.ApiVersion(api_version=version)]
            case aw.DisksUsage(mapping=mapping):
                kept, bad = keep_valid({k: e.to_json() for k, e in mapping.items()})
                if bad:
                    self.vm.reject("bad_name")
                self._publish(kept)
            case aw.UnknownMessage():
                self.vm.reject("unknown_message")
            case _:
                self.vm.reject("unexpected_message")
        return []
