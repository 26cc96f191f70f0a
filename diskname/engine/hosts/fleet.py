"""A monitor per registered host, as tasks of the engine's TaskGroup.

Every engine connects to every host (any engine answers the REST API and may
call any host), but a host is polled only by the engine that holds its lease
(:mod:`.leases`); a balancing round runs twice per refresh interval, also
picking up hosts other engines registered. The name changes other engines store
reach this engine's hub through the lease connection's NOTIFY
(:meth:`Monitors._on_foreign_name`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Coroutine
from typing import Any

import orjson

from ..config import EngineConfig
from ..core.models import HostRow
from ..db.store import Round, Store
from ..errors import Unavailable
from ..events import EventHub
from ..metrics import Metrics
from .connect import HostConnector, client_tls
from .leases import Leases, LeasesLost
from .monitor import HostMonitor
from .restore import restore_vms

log = logging.getLogger(__name__)

# An action notification naming a whole host ("host:<id>") rather than one VM.
HOST_PREFIX = "host:"
# A balancing round that fails for these pauses monitoring; anything else is a bug.
_LEASES_AWAY: tuple[type[Exception], ...] = (LeasesLost, Unavailable)


class Monitors:
    def __init__(
        self, store: Store, metrics: Metrics, hub: EventHub, config: EngineConfig, dsn: str
    ) -> None:
        self._store, self._metrics, self._hub, self._config = store, metrics, hub, config
        self._period = config.refresh_interval / 2
        self._leases = Leases(
            dsn,
            str(uuid.uuid4()),
            self._on_foreign_action,
            period=self._period,
            on_name=self._on_foreign_name,
        )
        self._connector = HostConnector(
            client_tls(config.pki_dir), insecure_plaintext_hosts=config.insecure_plaintext_hosts
        )
        self._by_host: dict[str, HostMonitor] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_of: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.balanced = asyncio.Event()
        # Set by a balancing round that found a floating disk's creation left by a gone
        # engine: the image sweep (:mod:`..actions.images`) waits on it.
        self.images_left = asyncio.Event()

    async def start(self, tg: asyncio.TaskGroup) -> None:
        self._tg = tg
        self._spawn(self._leases.run(), "leases")
        # Adds a monitor for every known host, claims our share, and sweeps what
        # engines killed before this one started left.
        await self.rebalance()
        self._spawn(self._balance_loop(), "balancing")

    def _spawn(self, coro: Coroutine[object, object, None], name: str) -> asyncio.Task[None]:
        if self._tg is None:
            raise RuntimeError("monitors are not started")
        try:
            task = self._tg.create_task(coro, name=name)
        except RuntimeError:  # the group is shutting down (Python 3.11 leaves coro unclosed)
            coro.close()
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def add(self, host: HostRow) -> HostMonitor:
        if host.id in self._by_host:
            return self._by_host[host.id]
        monitor = HostMonitor(
            host,
            self._store,
            self._metrics,
            self._hub,
            self._config,
            self._leases.announce_action,
            self._connector,
            self._leases.fence,
            functools.partial(restore_vms, self._store),
        )
        self._by_host[host.id] = monitor
        self._task_of[host.id] = self._spawn(monitor.run(), f"monitor-{host.name}")
        return monitor

    def remove(self, host_id: str) -> None:
        """Stop monitoring a host that was deleted; its lease goes at the next round."""
        monitor = self._by_host.pop(host_id, None)
        task = self._task_of.pop(host_id, None)
        if task is not None:
            task.cancel()
        if monitor is not None:
            monitor.revoke()
            self._metrics.hosts_owned.pop(monitor.host.name, None)
            log.info("stopped monitoring host %s (deleted)", monitor.host.name)

    async def refetch_hosts(self, host_ids: list[str]) -> None:
        """Every VM of these hosts is fetched and stored again, by whichever engine owns it."""
        for host_id in host_ids:
            monitor = self._by_host.get(host_id)
            if monitor is not None and monitor.owned:
                monitor.invalidate_all()
            else:
                await self._leases.announce_action(HOST_PREFIX + host_id)

    @property
    def engine_pid(self) -> int | None:
        """The backend pid of the lease connection: what an intent names its engine by."""
        return self._leases.pid

    def get(self, host_id: str) -> HostMonitor | None:
        return self._by_host.get(host_id)

    async def register(self, host: HostRow) -> HostMonitor:
        """A host just added through this engine's API: monitor it, claim it if due."""
        monitor = self.add(host)
        await self.rebalance()
        return monitor

    async def rebalance(self) -> None:
        """One balancing round: pick up hosts registered or deleted elsewhere, hold our
        share of the leases, and sweep what a dead engine left (one statement reads
        it all, :meth:`..db.store.Store.balancing_round`)."""
        found: Round | None = None
        try:
            found = await self._store.balancing_round()
            for host in found.hosts:
                self.add(host)
            for gone in set(self._by_host) - {h.id for h in found.hosts}:
                self.remove(gone)  # deleted, maybe through another engine
            owned = await self._leases.balance(self._by_host)
        except _LEASES_AWAY as exc:
            log.warning("host leases lost, pausing all monitoring: %s", exc)
            owned = set()
        for host_id, monitor in self._by_host.items():
            if host_id in owned:
                monitor.grant()
            else:
                monitor.revoke()
            self._metrics.hosts_owned[monitor.host.name] = int(host_id in owned)
        self.balanced.set()
        if found is not None:
            self._sweep(found)

    async def _balance_loop(self) -> None:
        while True:
            await asyncio.sleep(self._period)
            await self.rebalance()

    def _sweep(self, found: Round) -> None:
        """Fetch again the VMs of our hosts with an intent a dead engine left (SPEC §19),
        and wake the image sweep if a creation is left.

        A restarted engine finds its own when it loads a host (:mod:`..db.intents`);
        this finds those of another engine that died while this one owned the host.
        """
        if found.images_left:
            self.images_left.set()
        for host_id, vm_id in found.stale:
            monitor = self._by_host.get(host_id)
            if monitor is not None and monitor.owned:
                monitor.invalidate(vm_id)

    def _on_foreign_action(self, payload: str) -> None:
        if payload.startswith(HOST_PREFIX):
            monitor = self._by_host.get(payload.removeprefix(HOST_PREFIX))
            if monitor is not None:
                monitor.invalidate_all()
            return
        for monitor in self._by_host.values():
            monitor.invalidate(payload)

    def _on_foreign_name(self, payload: str) -> None:
        """A name change some engine stored (this one's own included: the hub drops
        the copy). Our own database wrote it, but a bad one is dropped, not raised."""
        try:
            change: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            change = None
        if not isinstance(change, dict) or not isinstance(change.get("disk_id"), str):
            log.warning("dropping a name-change notification that is not one: %.80r", payload)
            return
        self._hub.publish(change)

    async def stop(self) -> None:
        """Cancel every monitor, wait for their connections to close, then free the leases."""
        self._tg = None
        leases = [t for t in self._tasks if t.get_name() == "leases"]
        monitors = [t for t in self._tasks if t not in leases]
        for group in (monitors, leases):
            for task in group:
                task.cancel()
            await asyncio.gather(*group, return_exceptions=True)
