"""One monitor per host: a JSON-RPC connection, hash-gated polling, notifications.

Every ``refresh_interval`` the monitor asks for ``Host.getAllVmStats`` and marks
the VMs whose hash differs from the one last processed; a ``|virt|VM_status|``
notification marks its VM at once. A single fetch worker per host drains the
marks with one ``Host.getVMFullList`` call, so one VM is never fetched twice
concurrently, and a mark made during a fetch is served by the next one.

Engine-initiated actions run under :meth:`HostMonitor.vm_action`, which bumps
the VM's generation before and after: a fetch that overlapped an action is
thrown away and repeated, so a stale picture never overwrites a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg

from ..logctx import log_context
from ..protocol import jsonrpc
from ..streams import CallTimeout, ConnectionLost, FrameTooLarge, JsonRpcClient, RpcError
from .config import EngineConfig
from .errors import HostCallFailed, HostNotConnected, HostRefused, HostTimeout, Invalid
from .events import EventHub
from .hostconn import HostConnector, HostUntrusted, client_tls
from .leases import Leases, LeasesLost
from .matching import MatchResult, match_names
from .metrics import Metrics
from .models import BadReport, HostRow, NameChange, VmReport, canonical_uuid, parse_report
from .store import UNAVAILABLE, Store

log = logging.getLogger(__name__)

MIN_BACKOFF = 0.1
MAX_BACKOFF = 5.0
# A host we do not trust will not change its mind quickly: ask less often.
MAX_UNTRUSTED_BACKOFF = 30.0
FIRST_CONNECT_WAIT = 5.0
MAX_BATCH = 500  # VMs stored per transaction
VM_STATUS_PREFIX = "|virt|VM_status|"
# Without host notifications, a VM the engine just changed is fetched again this
# long after the change: the guest names a disk a moment after the hypervisor
# plugged it, and the next regular poll may be a whole refresh interval away.
FOLLOW_UP_DELAYS = (0.1, 0.25, 0.5, 1.0, 2.0)


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
    ) -> None:
        self.host = host
        self._store, self._metrics, self._hub, self._config = store, metrics, hub, config
        self._announce = announce
        self._connector = connector or HostConnector()
        # Set while this engine owns the host (diskname.engine.leases): only the
        # owner polls, fetches and stores; any engine may call the host.
        self.owned = asyncio.Event()
        self._stale = True
        self._client: JsonRpcClient | None = None
        self._hashes: dict[str, str | None] = {}
        self._statuses: dict[str, str] = {}
        # VM id -> the hash that made us want it (None: fetch whatever it is).
        self._dirty: dict[str, str | None] = {}
        self._wake = asyncio.Event()
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._generation: Counter[str] = Counter()
        self._follow_ups: list[tuple[float, str]] = []  # a heap of (when, vm id)
        self._follow_ups_changed = asyncio.Event()
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
                self._first_attempt.set()
            except Exception:
                log.exception("monitor of host %s failed", self.host.name)
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
            self._first_attempt.set()
            return
        try:
            await self._serve(client)
        finally:
            self._client = None
            self.connected.clear()
            self._first_attempt.set()
            await client.close()

    def grant(self) -> None:
        """This engine now owns the host: reload what the database knows, then poll."""
        if not self.owned.is_set():
            self._stale = True
            self.owned.set()

    def revoke(self) -> None:
        self.owned.clear()
        self._dirty.clear()

    def invalidate(self, vm_id: str) -> None:
        """Another engine acted on this VM: fetch it whatever its hash says."""
        if self.owned.is_set() and vm_id in self._statuses:
            self._hashes[vm_id] = None
            self._mark(vm_id, None)

    async def _load_states(self) -> None:
        states = await self._store.vm_states(self.host.id)
        self._hashes = {vm: h for vm, (h, _) in states.items()}
        self._statuses = {vm: s for vm, (_, s) in states.items()}
        self._dirty.clear()
        self._stale = False

    async def _serve(self, client: JsonRpcClient) -> None:
        self._stale = True
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
            asyncio.create_task(self._follow_up_loop()),
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
            if isinstance(exc, ConnectionLost | TimeoutError):
                log.info("lost connection to host %s: %s", self.host.name, exc)
            elif exc is not None:
                raise exc

    async def _set_status(self, status: str, reason: str | None = None) -> None:
        if not self.owned.is_set():
            return
        try:
            await self._store.set_host_status(self.host.id, status, reason)
        except Exception:
            log.exception("cannot record host %s as %s", self.host.name, status)

    # -- polling and notifications -------------------------------------------

    async def _poll_loop(self, client: JsonRpcClient) -> None:
        while True:
            if not self.owned.is_set():
                await self.owned.wait()
                await self._set_status("up")
            try:
                if self._stale:
                    await self._load_states()
                await self._poll_once(client)
            except UNAVAILABLE as exc:
                # Keep the host connection; reload what the database knows once it is back.
                log.warning("database unavailable while polling %s: %s", self.host.name, exc)
                self._stale = True
            await asyncio.sleep(self._config.refresh_interval)

    async def _poll_once(self, client: JsonRpcClient) -> None:
        try:
            stats = await client.call("Host.getAllVmStats")
        except RpcError as exc:
            log.warning("Host.getAllVmStats failed on %s: %s", self.host.name, exc)
            return
        self._metrics.polls += 1
        if not isinstance(stats, list):
            log.warning("Host.getAllVmStats on %s returned no list", self.host.name)
            return
        for entry in stats:
            await self._consider(entry)

    async def _consider(self, entry: Any) -> None:
        try:
            vm_id = canonical_uuid(entry.get("vmId") if isinstance(entry, dict) else None)
        except ValueError:
            return
        status, vm_hash = entry.get("status"), entry.get("hash")
        known = self._statuses.get(vm_id)
        if known is not None and isinstance(status, str) and status != known:
            await self._store.set_vm_status(vm_id, status)
            self._statuses[vm_id] = status
        self._mark(vm_id, vm_hash if isinstance(vm_hash, str) else None)

    def _mark(self, vm_id: str, vm_hash: str | None) -> None:
        if self._is_current(vm_id, vm_hash):
            return
        self._dirty[vm_id] = vm_hash
        self._wake.set()

    def _is_current(self, vm_id: str, vm_hash: str | None) -> bool:
        if not self._config.hash_gate or vm_hash is None or vm_id not in self._hashes:
            return False
        return self._hashes[vm_id] == vm_hash

    def _on_notification(self, note: jsonrpc.Notification) -> None:
        if not self._config.events or not note.method.startswith(VM_STATUS_PREFIX):
            return
        if not self.owned.is_set() or self._stale:
            return  # not ours, or the next poll reloads and sees every change
        params = note.params if isinstance(note.params, dict) else {}
        try:
            vm_id = canonical_uuid(note.method[len(VM_STATUS_PREFIX) :])
        except ValueError:
            return
        vm_hash = params.get("hash")
        self._mark(vm_id, vm_hash if isinstance(vm_hash, str) else None)

    # -- fetching ------------------------------------------------------------

    async def _fetch_loop(self, client: JsonRpcClient) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch = sorted(vm for vm, h in self._dirty.items() if not self._is_current(vm, h))
            self._dirty.clear()
            if batch:
                await self._fetch(client, batch)

    async def _fetch(self, client: JsonRpcClient, batch: list[str]) -> None:
        generations = {vm: self._generation[vm] for vm in batch}
        self._metrics.full_list_calls += 1
        try:
            result = await client.call("Host.getVMFullList", {"vmList": batch})
        except RpcError as exc:
            log.warning("Host.getVMFullList failed on %s: %s", self.host.name, exc)
            return
        reports: dict[str, VmReport] = {}
        for raw in result if isinstance(result, list) else []:
            try:
                report = parse_report(raw)
            except BadReport as exc:
                log.warning("host %s sent a bad VM: %s", self.host.name, exc)
                continue
            if report.vm_id in generations:  # never store what was not asked for
                reports[report.vm_id] = report
        ordered = [reports[vm] for vm in sorted(reports)]
        for start in range(0, len(ordered), MAX_BATCH):
            await self._apply(ordered[start : start + MAX_BATCH], generations)

    async def _apply(self, reports: list[VmReport], generations: dict[str, int]) -> None:
        """Match and store a batch in one transaction, under the locks of its VMs."""
        async with contextlib.AsyncExitStack() as stack:
            for report in reports:  # sorted by VM id: one lock order, no deadlock
                await stack.enter_async_context(self._locks[report.vm_id])
            if not self.owned.is_set():
                return  # no longer ours to store
            items = []
            for report in reports:
                if generations[report.vm_id] != self._generation[report.vm_id]:
                    self._mark(report.vm_id, None)  # an action overlapped the fetch: again
                    continue
                match = match_names([d.as_vm_disk() for d in report.devices], report.mapping)
                self._metrics.rejected.update(match.rejected)
                items.append((report, match))
            stored, changes = await self._store_items(items)
            for report in stored:
                self._hashes[report.vm_id] = report.hash
                self._statuses[report.vm_id] = report.status
        for change in changes:
            self._hub.publish(change.to_json())
            if change.new is not None:
                self._metrics.name_stored(change.vm_id, change.disk_id)

    async def _store_items(
        self, items: list[tuple[VmReport, MatchResult]]
    ) -> tuple[list[VmReport], list[NameChange]]:
        """The VMs stored and their name changes; the others keep their old hashes.

        A batch that PostgreSQL refuses is retried VM by VM, so one bad VM cannot
        hold back the others. When the database is away nothing is stored, and
        the next poll, seeing the old hashes, fetches the VMs again.
        """
        if not items:
            return [], []
        try:
            changes = await self._store.apply_reports(self.host.id, items)
            return [report for report, _ in items], changes
        except UNAVAILABLE as exc:
            log.warning("database unavailable, %d VM(s) left for later: %s", len(items), exc)
            return [], []
        except asyncpg.PostgresError:
            if len(items) == 1:
                log.exception("cannot store VM %s from host %s", items[0][0].vm_id, self.host.name)
                return [], []
        stored: list[VmReport] = []
        all_changes: list[NameChange] = []
        for item in items:
            done, changes = await self._store_items([item])
            stored += done
            all_changes += changes
        return stored, all_changes

    # -- engine-initiated actions -------------------------------------------

    @contextlib.asynccontextmanager
    async def vm_action(self, vm_id: str) -> AsyncIterator[None]:
        """Serialise the engine's own changes to one VM against fetches of it."""
        async with self._locks[vm_id]:
            self._generation[vm_id] += 1
            try:
                yield
            finally:
                self._generation[vm_id] += 1
                # Whatever the host's hash becomes, even an old one, fetch it again.
                self._hashes[vm_id] = None
                if not self.owned.is_set() and self._announce is not None:
                    await self._announce(vm_id)  # the owning engine must fetch it
                elif not self._config.events:
                    self._schedule_follow_ups(vm_id)

    def _schedule_follow_ups(self, vm_id: str) -> None:
        now = asyncio.get_running_loop().time()
        for delay in FOLLOW_UP_DELAYS:
            heapq.heappush(self._follow_ups, (now + delay, vm_id))
        self._follow_ups_changed.set()

    async def _follow_up_loop(self) -> None:
        """One task per host (not a timer per VM) serves every scheduled re-fetch."""
        loop = asyncio.get_running_loop()
        while True:
            self._follow_ups_changed.clear()
            if not self._follow_ups:
                await self._follow_ups_changed.wait()
                continue
            when, vm_id = self._follow_ups[0]
            if when > loop.time():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(when - loop.time()):
                        await self._follow_ups_changed.wait()
                continue
            heapq.heappop(self._follow_ups)
            if self.owned.is_set():
                self._mark(vm_id, None)

    async def call(self, method: str, params: jsonrpc.Params = None) -> Any:
        """Call the host over the monitor's connection, for an action of the engine's.

        The client's errors become the engine's own, once, here.
        """
        if self._client is None and not self._first_attempt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FIRST_CONNECT_WAIT):
                    await self._first_attempt.wait()
        client = self._client
        name = self.host.name
        if client is None:
            raise HostNotConnected(f"host {name} is not connected")
        try:
            return await client.call(method, params, timeout=self._config.action_timeout)
        except RpcError as exc:
            if exc.code == jsonrpc.INVALID_PARAMS:
                raise Invalid(f"host {name} refused {method}: {exc.message}") from exc
            raise HostRefused(f"host {name} refused {method}: {exc.message}", exc.code) from exc
        except CallTimeout as exc:
            raise HostTimeout(f"host {name}: {exc}") from exc
        except (ConnectionLost, FrameTooLarge) as exc:
            raise HostCallFailed(f"host {name}: {method} failed: {exc}") from exc


async def _until_closed(client: JsonRpcClient) -> None:
    await client.closed.wait()
    raise ConnectionLost("the host closed the connection")


class Monitors:
    """A monitor per registered host, as tasks of the engine's TaskGroup.

    Every engine connects to every host (any engine answers the REST API and
    may call any host), but a host is polled only by the engine that holds its
    lease (:mod:`diskname.engine.leases`); a balancing round runs twice per
    refresh interval, also picking up hosts other engines registered.
    """

    def __init__(
        self, store: Store, metrics: Metrics, hub: EventHub, config: EngineConfig, dsn: str
    ) -> None:
        self._store, self._metrics, self._hub, self._config = store, metrics, hub, config
        self._leases = Leases(dsn, str(uuid.uuid4()), self._on_foreign_action)
        self._connector = HostConnector(
            client_tls(config.pki_dir), insecure_plaintext_hosts=config.insecure_plaintext_hosts
        )
        self._by_host: dict[str, HostMonitor] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._tg: asyncio.TaskGroup | None = None
        self.balanced = asyncio.Event()

    async def start(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg
        await self.rebalance()  # adds a monitor for every known host, claims our share
        task = tg.create_task(self._balance_loop(), name="leases")
        self._tasks.add(task)

    def add(self, host: HostRow) -> HostMonitor:
        if host.id in self._by_host:
            return self._by_host[host.id]
        if self._tg is None:
            raise RuntimeError("monitors are not started")
        monitor = HostMonitor(
            host,
            self._store,
            self._metrics,
            self._hub,
            self._config,
            self._leases.announce_action,
            self._connector,
        )
        self._by_host[host.id] = monitor
        task = self._tg.create_task(monitor.run(), name=f"monitor-{host.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return monitor

    def get(self, host_id: str) -> HostMonitor | None:
        return self._by_host.get(host_id)

    async def register(self, host: HostRow) -> HostMonitor:
        """A host just added through this engine's API: monitor it, claim it if due."""
        monitor = self.add(host)
        await self.rebalance()
        return monitor

    async def rebalance(self) -> None:
        try:
            for host in await self._store.list_hosts():
                self.add(host)
            owned = await self._leases.balance(self._by_host)
        except (LeasesLost, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("host leases lost, pausing all monitoring: %s", exc)
            owned = set()
        for host_id, monitor in self._by_host.items():
            if host_id in owned:
                monitor.grant()
            else:
                monitor.revoke()
            self._metrics.hosts_owned[monitor.host.name] = int(host_id in owned)
        self.balanced.set()

    async def _balance_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.refresh_interval / 2)
            await self.rebalance()

    def _on_foreign_action(self, vm_id: str) -> None:
        for monitor in self._by_host.values():
            monitor.invalidate(vm_id)

    async def stop(self) -> None:
        """Cancel every monitor, wait for their connections to close, free the leases."""
        self._tg = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._leases.close()
