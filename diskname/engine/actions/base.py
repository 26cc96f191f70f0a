"""What every action shares: the store, the monitors, look-ups that raise NotFound, the hub."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from ..core.models import Attachment, NameChange, VmRow
from ..db.batching import Coalescer
from ..db.catalog import Catalog
from ..db.store import Store
from ..errors import (
    HostCallFailed,
    HostNotConnected,
    HostRefused,
    HostTimeout,
    NotFound,
)
from ..events import EventHub
from ..hosts.fleet import Monitors
from ..hosts.monitor import HostMonitor
from ..metrics import Metrics

log = logging.getLogger(__name__)

# What a host can fail a call with: by force, the engine forgets without its word.
HOST_FAILURES = (HostNotConnected, HostRefused, HostCallFailed, HostTimeout)


class ActionBase:
    def __init__(self, store: Store, monitors: Monitors, metrics: Metrics, hub: EventHub) -> None:
        self._store, self._monitors, self._metrics, self._hub = store, monitors, metrics, hub
        self._catalog = Catalog(store.pool, metrics)
        # Requests that arrive together look their VMs up in one query.
        self._vms: Coalescer[str, VmRow] = Coalescer(store.get_vms)

    async def vm(self, vm_id: str) -> VmRow:
        """The VM, or :class:`NotFound`."""
        return await self._vms.submit(vm_id)

    async def _attachment(self, vm_id: str, disk_id: str) -> Attachment:
        att = await self._store.get_attachment(vm_id, disk_id)
        if att is None:
            raise NotFound(f"disk {disk_id} is not attached to VM {vm_id}")
        return att

    def _monitor(self, host_id: str) -> HostMonitor:
        monitor = self._monitors.get(host_id)
        if monitor is None:
            raise HostNotConnected(f"host {host_id} is not monitored by this engine")
        return monitor

    @contextlib.asynccontextmanager
    async def _on_host(
        self, host_id: str, vm_id: str, force: bool
    ) -> AsyncIterator[HostMonitor | None]:
        """The VM's host monitor, under the VM's action lock; with ``force``, None when
        this engine has no monitor of the host (the host was not asked)."""
        try:
            monitor = self._monitor(host_id)
        except HostNotConnected:
            if not force:
                raise
            yield None
            return
        async with monitor.vm_action(vm_id):
            yield monitor

    @staticmethod
    @contextlib.asynccontextmanager
    async def _unless_forced(force: bool, what: str) -> AsyncIterator[None]:
        """A host call that, with ``force``, may fail: the engine forgets all the same.

        An admin can always clear what an unreachable, untrusted or lying host
        holds (SPEC §19); the host may still have it, and is told nothing more.
        """
        try:
            yield
        except HostNotConnected as exc:
            if not force:
                raise HostNotConnected(f"{exc}: with force=true it is {what} all the same") from exc
            log.warning("%s by force, without the host's word: %s", what, exc)
        except HOST_FAILURES as exc:
            if not force:
                raise
            log.warning("%s by force, without the host's word: %s", what, exc)

    def _published(self, change: NameChange | None) -> None:
        if change is not None:
            self._hub.publish(change.to_json())
