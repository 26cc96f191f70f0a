"""Hosts: listed, registered (and monitored at once), forgotten."""

from __future__ import annotations

from ..core.models import HostRow
from ..core.search import Search
from ..errors import NotFound
from .base import ActionBase


class HostActions(ActionBase):
    async def hosts(self, search: Search | None = None, limit: int | None = None) -> list[HostRow]:
        return await self._store.list_hosts(search, limit)

    async def host(self, host_id: str) -> HostRow:
        host = await self._store.get_host(host_id)
        if host is None:
            raise NotFound(f"no host {host_id}")
        return host

    async def add_host(
        self, host_id: str, name: str, address: str, port: int, token: str | None
    ) -> HostRow:
        host = await self._store.add_host(host_id, name, address, port, token)
        await self._monitors.register(host)
        return host

    async def delete_host(self, host_id: str, *, force: bool = False) -> None:
        """Forget a host with no VMs (:class:`Conflict` otherwise) and stop monitoring it.

        With ``force``, its VMs are forgotten with it (their disks stay, detached):
        the host is told nothing, so a host that is gone, or lies, can always be cleared.
        """
        await self._catalog.delete_host(host_id, with_vms=force)
        self._monitors.remove(host_id)
