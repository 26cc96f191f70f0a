"""The engine's resources as every API edge sees them: hosts, VMs, attachments, disks.

Both the JSON API (:mod:`..http.app`) and oVirt's XML API (:mod:`..ovirt`) call these
and only these, so a lookup, a search or a hot-plug means the same through
either: each edge parses its own format into the arguments here and writes
the values returned (:class:`HostRow`, :class:`VmRow`, :class:`Attachment`,
:class:`Disk`) in its own format. Failures are the engine's errors
(:mod:`..errors`), mapped to statuses at each edge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.models import DISK_NAME_MAX, Attachment, Disk, DiskSpec, HostRow, VmRow
from ..core.search import NameFilter
from ..db.store import Store
from ..errors import Conflict, Invalid, NotFound
from ..hosts.fleet import Monitors
from ..http.parsing import NAME_PATTERN
from .calls import INTERFACES, Actions

# The largest size a JSON number carries exactly (2**53): 8 PiB.
DISK_SIZE_MAX = 1 << 53


@dataclass(frozen=True, slots=True)
class AttachRequest:
    """Attach the disk ``disk_id``, or a new disk (``new_disk``, or defaults) when it is None."""

    interface: str
    active: bool = True
    disk_id: str | None = None
    new_disk: DiskSpec | None = None
    # A new direct-LUN disk that keeps this serial (SPEC §2).
    lun_serial: str | None = None

    def __post_init__(self) -> None:
        if self.new_disk is not None:
            _check_new_disk(self.new_disk)
        if self.interface not in INTERFACES:
            raise Invalid(f"interface must be one of {sorted(INTERFACES)}, not {self.interface!r}")
        if self.disk_id is not None and self.new_disk is not None:
            raise Invalid("give an existing disk's id or a new disk's name and size, not both")
        if self.disk_id is not None and self.lun_serial is not None:
            raise Invalid(
                "give disk.id (an existing disk) or disk.lun_storage (a new LUN), not both"
            )


def _check_new_disk(disk: DiskSpec) -> None:
    name = disk.name
    # The JSON API's rule for names (engine/http/parsing.py), which its OpenAPI document states.
    if len(name) > DISK_NAME_MAX or not re.fullmatch(NAME_PATTERN, name):
        raise Invalid(f"a disk's name must be 1-{DISK_NAME_MAX} printable characters")
    if not 0 < disk.provisioned_size <= DISK_SIZE_MAX:
        raise Invalid(f"provisioned_size must be between 1 and {DISK_SIZE_MAX} bytes")


class Resources:
    """Lookups and actions, returning the engine's own values."""

    def __init__(self, store: Store, actions: Actions, monitors: Monitors) -> None:
        self._store, self._actions, self._monitors = store, actions, monitors

    # -- hosts ---------------------------------------------------------------

    async def hosts(self) -> list[HostRow]:
        return await self._store.list_hosts()

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

    # -- VMs -------------------------------------------------------------------

    async def vms(self, names: NameFilter | None = None, limit: int | None = None) -> list[VmRow]:
        return await self._store.list_vms(names, limit)

    async def vm(self, vm_id: str) -> VmRow:
        return await self._actions.vm(vm_id)

    async def create_vm(self, name: str, host_id: str, vm_id: str | None) -> VmRow:
        return await self._actions.create_vm(name, host_id, vm_id)

    async def destroy_vm(self, vm_id: str) -> None:
        await self._actions.destroy_vm(vm_id)

    # -- attachments ---------------------------------------------------------

    async def attachments(self, vm_id: str) -> list[Attachment]:
        vm = await self.vm(vm_id)
        return await self._store.list_attachments(vm.id)

    async def attachments_of(self, vms: Sequence[VmRow]) -> dict[str, list[Attachment]]:
        """Every listed VM's attachments, in one query (``follow=disk_attachments``)."""
        found: dict[str, list[Attachment]] = {vm.id: [] for vm in vms}
        for att in await self._store.attachments_of(list(found)):
            found[att.vm_id].append(att)
        return found

    async def attachment(self, vm_id: str, disk_id: str) -> Attachment:
        vm = await self.vm(vm_id)
        return await self._actions.attachment(vm.id, disk_id)

    async def attach(self, vm_id: str, request: AttachRequest, requested_at: float) -> Attachment:
        return await self._actions.add_attachment(
            vm_id,
            request.disk_id,
            request.interface,
            request.active,
            requested_at,
            new_disk=request.new_disk,
            lun_serial=request.lun_serial,
        )

    async def set_active(
        self, vm_id: str, disk_id: str, active: bool, requested_at: float
    ) -> Attachment:
        return await self._actions.set_active(vm_id, disk_id, active, requested_at)

    async def detach(self, vm_id: str, disk_id: str, *, remove_disk: bool = False) -> None:
        """Unplug and detach; with ``remove_disk`` the disk is deleted too.

        A disk still attached to another VM is not deleted: :class:`Conflict`,
        before anything is unplugged.
        """
        await self.attachment(vm_id, disk_id)
        if remove_disk:
            others = [v for v in await self._store.disk_users(disk_id) if v != vm_id]
            if others:
                raise Conflict(f"disk {disk_id} is also attached to VM {others[0]}")
        await self._actions.detach(vm_id, disk_id)
        if remove_disk and not await self._store.remove_disk(disk_id):
            raise Conflict(f"disk {disk_id} was detached, but attached elsewhere meanwhile")

    # -- disks -------------------------------------------------------------------

    async def disks(self, names: NameFilter | None = None, limit: int | None = None) -> list[Disk]:
        return await self._store.list_disks(names, limit)

    async def disk(self, disk_id: str) -> Disk:
        disk = await self._store.get_disk(disk_id)
        if disk is None:
            raise NotFound(f"no disk {disk_id}")
        return disk
