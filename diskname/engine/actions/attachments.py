"""Disk attachments: listed, attached (a new or existing disk), plugged, unplugged, detached.

Hot-plugs come in bursts, so their writes are batched (:mod:`..db.batching`): the
VM look-ups, the claims and the outcomes of requests that arrive together each
share one query or statement (:mod:`..db.plugs`), and their host calls go out side
by side on the host's connection, which the host serves concurrently. Each
request still waits for its own VM's lock and gets its own answer or error. A
direct LUN and ``PUT active=true`` keep the one-at-a-time path; both paths make
the host call, and undo their claim when it fails, in one place (:meth:`_hotplug`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...protocol.disks import disk_serial
from .. import crashpoints
from ..core.models import (
    DISK_NAME_MAX,
    INTERFACES,
    Attachment,
    DiskSpec,
    VmRow,
    canonical_uuid,
    valid_object_name,
)
from ..db.batching import Coalescer
from ..db.plugs import Claim, Outcome
from ..db.store import Store
from ..errors import Conflict, DeviceNotOnVm, Invalid, MissingReference
from ..events import EventHub
from ..hosts.fleet import Monitors
from ..hosts.monitor import HostMonitor
from ..metrics import Metrics
from .base import ActionBase
from .vms import default_disk_name, drive, new_attachment

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
            check_new_disk(self.new_disk)
        if self.interface not in INTERFACES:
            raise Invalid(f"interface must be one of {sorted(INTERFACES)}, not {self.interface!r}")
        if self.disk_id is not None and self.new_disk is not None:
            raise Invalid("give an existing disk's id or a new disk's name and size, not both")
        if self.disk_id is not None and self.lun_serial is not None:
            raise Invalid(
                "give disk.id (an existing disk) or disk.lun_storage (a new LUN), not both"
            )


def check_new_disk(disk: DiskSpec) -> None:
    # The JSON API's rule for names, which its OpenAPI document states.
    if len(disk.name) > DISK_NAME_MAX or not valid_object_name(disk.name):
        raise Invalid(f"a disk's name must be 1-{DISK_NAME_MAX} printable characters")
    if not 0 < disk.provisioned_size <= DISK_SIZE_MAX:
        raise Invalid(f"provisioned_size must be between 1 and {DISK_SIZE_MAX} bytes")


def _returned_device(result: Any, asked: str) -> tuple[str, str | None]:
    """The device id (``asked`` unless the host says) and address the host gave the disk."""
    if not isinstance(result, Mapping):
        return asked, None
    try:
        device_id = canonical_uuid(result.get("deviceId", asked))
    except ValueError:
        device_id = asked
    address = result.get("address")
    return device_id, address if isinstance(address, str) and address else None


class AttachmentActions(ActionBase):
    def __init__(self, store: Store, monitors: Monitors, metrics: Metrics, hub: EventHub) -> None:
        super().__init__(store, monitors, metrics, hub)
        self._disk_names: Coalescer[str, set[str]] = Coalescer(store.disk_names)
        self._claims: Coalescer[Claim, str] = Coalescer(store.claim_plugs)
        self._outcomes: Coalescer[Outcome, Attachment | None] = Coalescer(store.settle_plugs)
        # Waiters woken together (one name, many waiters) read their attachments together.
        self._waited: Coalescer[tuple[str, str], Attachment] = Coalescer(store.get_attachments)

    async def attachments(self, vm_id: str) -> list[Attachment]:
        vm = await self.vm(vm_id)
        return [self._confirmed(vm, a) for a in await self._store.list_attachments(vm.id)]

    async def attachments_of(self, vms: Sequence[VmRow]) -> dict[str, list[Attachment]]:
        """Every listed VM's attachments, in one query (``follow=disk_attachments``)."""
        found: dict[str, list[Attachment]] = {vm.id: [] for vm in vms}
        hosts = {vm.id: vm for vm in vms}
        for att in await self._store.attachments_of(list(found)):
            found[att.vm_id].append(self._confirmed(hosts[att.vm_id], att))
        return found

    async def attachment(self, vm_id: str, disk_id: str) -> Attachment:
        """The attachment; :class:`NotFound` for a missing VM or a disk not attached to it."""
        vm = await self.vm(vm_id)
        return self._confirmed(vm, await self._attachment(vm.id, disk_id))

    def _confirmed(self, vm: VmRow, att: Attachment) -> Attachment:
        """``reported_at`` as the VM's host last said it, when this engine monitors the
        host: confirmations of an unchanged mapping are kept in memory, not written
        (:mod:`..core.sync.freshness`)."""
        monitor = self._monitors.get(vm.host_id)
        if monitor is None:
            return att
        return att.confirmed(monitor.sync.agents.reported_at(vm.id))

    async def attachment_named(self, vm_id: str, disk_id: str, timeout: float) -> Attachment:
        """The attachment as soon as it has a logical name, or as it is after ``timeout`` s.

        The database is read once before parking and once at the end; meanwhile only
        the hub's change events (this engine's writes, the other engines' NOTIFY)
        wake the request, so a parked waiter costs no query (SPEC §18).
        """
        vm = await self.vm(vm_id)
        with self._hub.waiters.waiting(vm.id, disk_id) as named:  # before the read: no gap
            att = await self._waited.submit((vm.id, disk_id))
            if att.logical_name is not None:
                return att
            await self._hub.waiters.park(named, timeout)
        return await self._waited.submit((vm.id, disk_id))

    async def attach(self, vm_id: str, request: AttachRequest, requested_at: float) -> Attachment:
        """Attach an existing disk, or a new one when ``disk_id`` is None; plug it if active.

        A new disk takes ``new_disk``'s name and size; by default it is named
        ``<vm>_Disk<n>`` and sized :data:`.models.DEFAULT_DISK_SIZE`. With
        ``lun_serial`` it is a direct LUN: it keeps the LUN's own serial (SPEC §2)
        instead of taking its id's first 20 characters.
        """
        vm = await self.vm(vm_id)
        disk_id, lun_serial = request.disk_id, request.lun_serial
        spec = None if disk_id is not None else request.new_disk or await self._default_disk(vm)
        # What the host is told of the image: a floating disk's domain, a new disk's size.
        image = await self._image_fields(vm, disk_id) if disk_id else {}
        if spec is not None:
            image = {"size": spec.provisioned_size}
        if request.active and lun_serial is None:
            return await self._attach_plugged(
                vm, disk_id, request.interface, spec, requested_at, image
            )
        if spec is not None and lun_serial is not None:
            spec = dataclasses.replace(spec, lun_serial=lun_serial)
        disk_id = disk_id or str(uuid.uuid4())
        if spec is not None:
            serial: str | None = spec.lun_serial or disk_serial(disk_id)
        else:
            serial = await self._store.disk_serial(disk_id)
        if serial is None:
            raise MissingReference(f"disk.id {disk_id}: no such disk")
        monitor = self._monitor(vm.host_id)
        att = new_attachment(vm_id, disk_id, request.interface)
        async with monitor.vm_action(vm_id):
            await self._store.attach(att, serial, spec, plug=request.active)
            if request.active:
                try:
                    await self._plug(monitor, att, serial, requested_at, image)
                except Exception:
                    await self._store.detach(vm_id, disk_id)
                    if spec:
                        await self._store.delete_disk(disk_id)
                    raise
        return await self._attachment(vm_id, disk_id)

    async def _attach_plugged(
        self,
        vm: VmRow,
        disk_id: str | None,
        interface: str,
        spec: DiskSpec | None,
        requested_at: float,
        image: Mapping[str, Any],
    ) -> Attachment:
        """Attach and hot-plug: claim, call the host, record the outcome (each batched)."""
        monitor = self._monitor(vm.host_id)
        disk_id = disk_id or str(uuid.uuid4())
        claim = Claim(
            vm.id,
            disk_id,
            str(uuid.uuid4()),
            interface,
            disk_serial(disk_id) if spec else None,
            spec.name if spec else None,
            spec.provisioned_size if spec else 0,
            engine_pid=self._monitors.engine_pid,
        )
        async with monitor.vm_action(vm.id, plug=True):
            serial = await self._claims.submit(claim)  # or Conflict, NotFound, MissingReference
            att = new_attachment(vm.id, disk_id, interface)
            att = dataclasses.replace(att, device_id=claim.device_id)
            undo = functools.partial(self._outcomes.submit, Outcome(claim, failed=True))
            device_id, address = await self._hotplug(
                monitor, att, serial, requested_at, undo, image
            )
            done = await self._outcomes.submit(Outcome(claim, device_id, address))  # or NotFound
        assert done is not None  # only a failed outcome settles to None
        return done

    async def _default_disk(self, vm: VmRow) -> DiskSpec:
        taken = await self._disk_names.submit(vm.id)  # requests together: one query
        return DiskSpec(default_disk_name(vm.name, taken))

    async def set_active(
        self, vm_id: str, disk_id: str, active: bool, requested_at: float
    ) -> Attachment:
        vm = await self.vm(vm_id)
        monitor = self._monitor(vm.host_id)
        async with monitor.vm_action(vm_id):
            att = await self._attachment(vm_id, disk_id)
            if att.active != active:
                if active:
                    serial = await self._store.disk_serial(disk_id) or disk_serial(disk_id)
                    fresh = dataclasses.replace(att, device_id=str(uuid.uuid4()))
                    image = await self._image_fields(vm, disk_id)
                    await self._plug(monitor, fresh, serial, requested_at, image)
                else:
                    await self._unplug(monitor, att)
                    self._published(await self._store.mark_unplugged(vm_id, disk_id))
        return await self._attachment(vm_id, disk_id)

    async def detach(
        self, vm_id: str, disk_id: str, *, remove_disk: bool = False, force: bool = False
    ) -> None:
        """Unplug and detach; with ``remove_disk`` the disk is deleted too; with
        ``force``, detached even when the host cannot be reached or refuses.

        A disk still attached to another VM is not deleted: :class:`Conflict`,
        before anything is unplugged.
        """
        await self.attachment(vm_id, disk_id)
        if remove_disk:
            others = [v for v in await self._store.disk_users(disk_id) if v != vm_id]
            if others:
                raise Conflict(f"disk {disk_id} is also attached to VM {others[0]}")
        vm = await self.vm(vm_id)
        # A floating disk's image is in a storage domain: it stays while the disk does
        # (the host must not discard it at the unplug) and goes with it (Image.delete).
        placed = await self._storage.placement(disk_id)
        async with self._on_host(vm.host_id, vm_id, force) as monitor:
            att = await self._attachment(vm_id, disk_id)
            if att.active and monitor is not None:
                async with self._unless_forced(force, f"disk {disk_id} detached"):
                    await self._unplug(monitor, att, discard=placed is None)
            self._published(await self._store.detach(vm_id, disk_id))
        if remove_disk and not await self._store.remove_disk(disk_id):
            raise Conflict(f"disk {disk_id} was detached, but attached elsewhere meanwhile")
        if remove_disk and placed is not None:
            await self._drop_image(placed[0], disk_id)

    # -- the host calls ------------------------------------------------------------

    async def _plug(
        self,
        monitor: HostMonitor,
        att: Attachment,
        serial: str,
        requested_at: float,
        image: Mapping[str, Any],
    ) -> None:
        """Plug an attached disk, one at a time: claim, call the host, record."""
        pid = self._monitors.engine_pid
        await self._store.claim_plug(att.vm_id, att.disk_id, att.device_id, pid)  # or Conflict
        undo = functools.partial(self._store.release_plug, att.vm_id, att.disk_id)
        device_id, address = await self._hotplug(monitor, att, serial, requested_at, undo, image)
        await self._store.mark_plugged(att.vm_id, att.disk_id, device_id, address)

    async def _hotplug(
        self,
        monitor: HostMonitor,
        att: Attachment,
        serial: str,
        requested_at: float,
        undo: Callable[[], Awaitable[object]],
        image: Mapping[str, Any],
    ) -> tuple[str, str | None]:
        """Ask the host to plug a claimed disk; ``undo`` the claim if it did not.

        Returns the device id and address the host gave the disk. The claim is an
        intent until its outcome is written: an engine killed in between leaves it
        for the host's owner to resolve (:mod:`..db.intents`).
        """
        self._metrics.plug_requested(att.vm_id, att.disk_id, requested_at)
        params = {"vmId": att.vm_id, "drive": drive(att, serial) | dict(image)}
        await crashpoints.reached("plug.claimed")
        try:
            result = await monitor.call("VM.hotplugDisk", params)
        except Exception:
            self._metrics.plug_abandoned(att.vm_id, att.disk_id)
            await undo()
            raise
        await crashpoints.reached("plug.called")
        return _returned_device(result, att.device_id)

    async def _unplug(self, monitor: HostMonitor, att: Attachment, discard: bool = False) -> None:
        """Ask the host to unplug; an intent until the caller writes the outcome."""
        self._metrics.plug_abandoned(att.vm_id, att.disk_id)
        params: dict[str, Any] = {"vmId": att.vm_id, "diskId": att.disk_id}
        if discard:  # detached for good: the host may remove the disk's image
            params["discard"] = True
        await self._store.intend_unplug(att.vm_id, att.disk_id, self._monitors.engine_pid)
        await crashpoints.reached("unplug.intended")
        try:
            # A host that no longer has the device: it is as unplugged as it gets.
            with contextlib.suppress(DeviceNotOnVm):
                await monitor.call("VM.hotunplugDisk", params)
        except Exception:
            await self._store.drop_intent(att.vm_id, att.disk_id)
            raise
        await crashpoints.reached("unplug.called")
