"""One monitor per host: the I/O around a :class:`~.sync.HostSync`.

The monitor holds the host connection (:mod:`.connect`), asks for
``Host.getAllVmStats`` every ``refresh_interval``, passes the host's
notifications on, runs one fetch worker that drains what the sync state says to
fetch with ``Host.getVMFullList``, and stores each reply in one transaction per
batch. Every decision (what is dirty, what is current, what an action
overlapped, what is damped) is the sync state's; this module only moves bytes
and rows.

Engine-initiated actions run under :meth:`HostMonitor.vm_action`: the VM is
marked busy (no fetch takes it meanwhile) and its lock serialises the action's
writes against a store of the same VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ...logctx import log_context
from ...protocol import host_wire as wire
from ...protocol import jsonrpc
from ...streams import (
    CallTimeout,
    ConnectionLost,
    FrameTooLarge,
    JsonRpcClient,
    RpcClientError,
    RpcError,
)
from ..config import EngineConfig
from ..core.matching import MatchResult, match_names
from ..core.models import GuestChange, HostRow, NameChange, VmReport
from ..core.sync import Batch, HostSync
from ..db.reports import Fence, LeaseLost
from ..db.store import Store
from ..errors import DatabaseRefused, HostNotConnected, Unavailable
from ..events import EventHub
from ..metrics import Metrics
from .agents import publish_agent_changes, store_agent_changes
from .connect import HostConnector, HostUntrusted
from .locks import VmLocks
from .refusals import host_errors

log = logging.getLogger(__name__)

Change = NameChange | GuestChange  # what a stored batch publishes to /api/events

MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
# A host we do not trust will not change its mind quickly: ask less often.
MAX_UNTRUSTED_BACKOFF = 30.0
FIRST_CONNECT_WAIT = 5.0
MAX_BATCH = 500  # VMs stored per transaction
POLL_TIMEOUTS_BEFORE_RECONNECT = 3

FenceSource = Callable[[str], Fence | None]
# Gives the host back VMs it no longer knows (:mod:`.restore`).
Restore = Callable[["HostMonitor", list[str]], Awaitable[int]]


class HostMonitor:
    """Keeps the database in step with one host, and carries the engine's calls to it."""

    def __init__(
        self,
        host: HostRow,
        store: Store,
        metrics: Metrics,
        hub: EventHub,
        config: EngineConfig,
        announce: Callable[[str], Awaitable[None]] | None = None,
        connector: HostConnector | None = None,
        fence: FenceSource | None = None,
        restore: Restore | None = None,
    ) -> None:
        self.host = host
        self._store, self._metrics, self._hub, self._config = store, metrics, hub, config
        self._announce = announce
        self._connector = connector or HostConnector()
        self._fence, self._restore = fence, restore
        # Whether this engine owns the host (diskname.engine.hosts.leases) is the sync
        # state's to say: only the owner polls, fetches and stores; any engine may call.
        self.sync = HostSync(hash_gate=config.hash_gate, events=config.events)
        self._ownership_moved = asyncio.Event()  # a wake-up, not a state
        self._client: JsonRpcClient | None = None
        self._wake = asyncio.Event()
        self._locks = VmLocks()
        self.connected = asyncio.Event()
        # Set once the first connection attempt is over, either way: a call made
        # right after the host was registered waits for it instead of failing.
        self._first_attempt = asyncio.Event()

    # -- connection --------------------------------------------------------

    async def run(self) -> None:
        """Connect, serve, reconnect with capped exponential back-off; until cancelled."""
        with log_context(host_id=self.host.id):
            await self._run()

    async def _run(self) -> None:
        backoff = MIN_BACKOFF
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            status: tuple[str, str | None] = ("unreachable", None)
            try:
                await self._connect_and_serve()
            except HostUntrusted as exc:
                log.warning("host %s is not trusted: %s", self.host.name, exc)
                status = ("untrusted", str(exc))
            except Exception:
                log.exception("monitor of host %s failed", self.host.name)
            self._first_attempt.set()
            if loop.time() - started > MAX_BACKOFF:
                backoff = MIN_BACKOFF
            await self._set_status(*status)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_UNTRUSTED_BACKOFF if status[1] else MAX_BACKOFF)

    async def _connect_and_serve(self) -> None:
        try:
            client = await self._connector.open(self.host, self._on_notification)
        except ConnectionLost as exc:
            log.debug("host %s unreachable: %s", self.host.name, exc)
            return
        try:
            await self._serve(client)
        finally:
            self._client = None
            self.connected.clear()
            await client.close()

    @property
    def owned(self) -> bool:
        return self.sync.owned

    def grant(self) -> None:
        """This engine now owns the host: reload what the database knows, then poll."""
        if self.sync.grant():  # (every balancing round grants again)
            self._ownership_moved.set()
            self._wake.set()

    def revoke(self) -> None:
        self.sync.revoke()
        self._ownership_moved.set()

    async def _until_owned(self) -> None:
        while not self.sync.owned:
            self._ownership_moved.clear()
            await self._ownership_moved.wait()

    def invalidate(self, vm_id: str) -> None:
        """Another engine acted on this VM: fetch it whatever its hash says."""
        self.sync.forget_hash(vm_id)
        self._wake.set()

    def invalidate_all(self) -> None:
        """Fetch and store every VM of the host again (its cluster's version changed)."""
        self.sync.forget_all()
        self._wake.set()

    async def _serve(self, client: JsonRpcClient) -> None:
        self.sync.mark_stale()
        self._client = client
        await self._set_status("up")
        self.connected.set()
        self._first_attempt.set()
        log.info("connected to host %s at %s:%s", self.host.name, self.host.address, self.host.port)
        # Not a TaskGroup: on Python 3.11 a group whose child fails while the
        # monitor is being cancelled swallows that cancellation, and leaves the
        # task's cancel count raised, which turns later timeouts into cancels.
        tasks = [
            asyncio.create_task(self._poll_loop(client)),
            asyncio.create_task(self._fetch_loop(client)),
            asyncio.create_task(_until_closed(client)),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if isinstance(exc, ConnectionLost):
                log.info("lost connection to host %s: %s", self.host.name, exc)
            elif exc is not None:
                raise exc

    async def _set_status(self, status: str, reason: str | None = None) -> None:
        if not self.owned:
            return
        try:
            await self._store.set_host_status(self.host.id, status, reason)
        except Exception:
            log.exception("cannot record host %s as %s", self.host.name, status)

    # -- polling and notifications -------------------------------------------

    async def _poll_loop(self, client: JsonRpcClient) -> None:
        timeouts = 0
        while True:
            if not self.owned:
                await self._until_owned()
                await self._set_status("up")
            try:
                if self.sync.needs_load:
                    self.sync.load(await self._store.vm_states(self.host.id))
                await self._poll_once(client)
                timeouts = 0
            except CallTimeout as exc:
                timeouts += 1
                log.warning("host %s: %s", self.host.name, exc)
                if timeouts >= POLL_TIMEOUTS_BEFORE_RECONNECT:
                    raise ConnectionLost(f"{timeouts} polls in a row got no answer") from exc
            except Unavailable as exc:
                # Keep the host connection; reload what the database knows once it is back.
                log.warning("database unavailable while polling %s: %s", self.host.name, exc)
                self.sync.mark_stale()
            await asyncio.sleep(self._config.refresh_interval)

    async def _poll_once(self, client: JsonRpcClient) -> None:
        try:
            stats = await client.call(
                "Host.getAllVmStats", self.sync.stats_params(), timeout=self._config.poll_timeout
            )
        except (RpcError, FrameTooLarge) as exc:
            log.warning("Host.getAllVmStats failed on %s: %s", self.host.name, exc)
            return
        self._metrics.polls += 1
        self._metrics.hosts_polled.add(self.host.id)
        unchanged = self.sync.counters["stats_unchanged"]
        try:
            reply: wire.StatsReply | wire.BadHostMessage = wire.parse_stats_reply(stats)
        except wire.BadHostMessage as exc:
            log.warning("Host.getAllVmStats of %s: %s", self.host.name, exc)
            reply = exc
        changes = self.sync.on_stats(reply)
        self._metrics.polls_unchanged += self.sync.counters["stats_unchanged"] - unchanged
        for vm_id, status in changes:
            await self._store.set_vm_status(vm_id, status)
        await store_agent_changes(self._store, self._hub, self.sync, self.host.id)
        missing = self.sync.take_missing()
        if missing and self._restore is not None:
            await self._restore(self, missing)
        if self.sync.wants_fetch:
            self._wake.set()

    def _on_notification(self, note: jsonrpc.Notification) -> None:
        try:
            status = wire.parse_notification(note)
        except wire.BadHostMessage:
            return
        if status is not None:
            self.sync.on_notification(status.vm_id, status.hash)
            self._wake.set()

    # -- fetching ------------------------------------------------------------

    async def _fetch_loop(self, client: JsonRpcClient) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self.sync.release_due(now)
            batch = self.sync.take_batch(now)
            if batch is not None:
                await self._fetch(client, batch)
                continue
            self._wake.clear()
            wakeup = self.sync.next_wakeup()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if wakeup is None else max(0, wakeup - now)):
                    await self._wake.wait()

    async def _fetch(self, client: JsonRpcClient, batch: Batch) -> None:
        self._metrics.full_list_calls += 1
        params = wire.full_list_params(batch.vm_ids)
        try:
            result = await client.call(
                "Host.getVMFullList", params, timeout=self._config.fetch_timeout
            )
        except RpcClientError as exc:
            self.sync.on_fetch_failed(batch)
            if isinstance(exc, ConnectionLost):
                raise
            log.warning("Host.getVMFullList failed on %s: %s", self.host.name, exc)
            return
        try:
            entries = wire.parse_full_list(result)
        except wire.BadHostMessage as exc:
            log.warning("Host.getVMFullList of %s: %s", self.host.name, exc)
            entries = ()  # as if every VM asked were gone
        reply = self.sync.on_reply(batch, entries)
        self._metrics.reports_dropped.update(reply.dropped)
        ordered = sorted(reply.reports, key=lambda r: r.vm_id)
        for start in range(0, len(ordered), MAX_BATCH):
            await self._apply(batch, ordered[start : start + MAX_BATCH])

    async def _apply(self, batch: Batch, reports: list[VmReport]) -> None:
        """Match and store reports in one transaction, under the locks of their VMs."""
        changes: list[Change] = []
        async with contextlib.AsyncExitStack() as stack:
            items = []
            for report in reports:  # sorted by VM id: one lock order, no deadlock
                if self.sync.moved(batch, report.vm_id):
                    self.sync.mark(report.vm_id, None)  # an action began meanwhile: again
                    continue  # (and never wait for an action's lock: it may be slow)
                await stack.enter_async_context(self._locks.hold(report.vm_id))
                if self.sync.moved(batch, report.vm_id):
                    self.sync.mark(report.vm_id, None)
                    continue
                match = match_names([d.as_vm_disk() for d in report.devices], report.mapping)
                self._metrics.rejected.update(match.rejected)
                self._metrics.names_refused.update(match.refused)
                items.append((report, match))
            if self.owned:  # no longer ours to store otherwise
                changes = await self._store_items(items)
        for change in changes:
            self._hub.publish(change.to_json())
            if isinstance(change, NameChange) and change.new is not None:
                self._metrics.name_stored(change.vm_id, change.disk_id)

    async def _store_items(self, items: list[tuple[VmReport, MatchResult]]) -> list[Change]:
        """Store a batch; the VMs not stored keep their old hashes and are fetched again.

        A batch that PostgreSQL refuses is retried VM by VM, so one bad VM cannot
        hold back the others. When the database is away nothing is stored.
        """
        if not items:
            return []
        fence = self._fence(self.host.id) if self._fence is not None else None
        try:
            stored = await self._store.apply_reports(self.host.id, items, fence=fence)
        except LeaseLost as exc:
            log.warning("not storing for host %s: %s", self.host.name, exc)
            self.revoke()
            return []
        except Unavailable as exc:
            log.warning("database unavailable, %d VM(s) left for later: %s", len(items), exc)
            return []
        except DatabaseRefused:
            if len(items) == 1:
                log.exception("cannot store VM %s from host %s", items[0][0].vm_id, self.host.name)
                return []
            changes: list[Change] = []
            for item in items:
                changes += await self._store_items([item])
            return changes
        self.sync.on_foreign(stored.foreign)
        self._metrics.foreign_reports += len(stored.foreign)
        self._metrics.claims_refused.update(stored.refused)
        self.sync.on_stored(r for r, _ in items if r.vm_id not in stored.foreign)
        publish_agent_changes(self._hub, self.sync.agents.take_announced())
        return [*stored.changes, *stored.guests]

    # -- engine-initiated actions -------------------------------------------

    @contextlib.asynccontextmanager
    async def vm_action(self, vm_id: str, *, plug: bool = False) -> AsyncIterator[None]:
        """Serialise the engine's own changes to one VM against fetches of it.

        ``plug``: a hot-plug, which the guest's own report follows (:mod:`..core.sync`).
        """
        self.sync.begin_action(vm_id)
        try:
            async with self._locks.hold(vm_id):
                yield
        finally:
            self.sync.end_action(vm_id, asyncio.get_running_loop().time(), settle=plug)
            self._wake.set()
            if not self.owned and self._announce is not None:
                await self._announce(vm_id)  # the owning engine must fetch it

    async def call(self, method: str, params: jsonrpc.Params = None) -> Any:
        """Call the host over the monitor's connection, for an action of the engine's.

        The client's errors become the engine's own, once (:mod:`.refusals`).
        """
        if self._client is None and not self._first_attempt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_CONNECT_WAIT):
                    await self._first_attempt.wait()
        client = self._client
        name = self.host.name
        if client is None:
            raise HostNotConnected(f"host {name} is not connected")
        with host_errors(name, method):
            return await client.call(method, params, timeout=self._config.action_timeout)


async def _until_closed(client: JsonRpcClient) -> None:
    await client.closed.wait()
    raise ConnectionLost("the host closed the connection")
