"""The libvirt hypervisor: every libvirt domain is a VM (SPEC §13).

libvirt's events come on the asyncio loop (``libvirtaio``, registered inside
the running loop before any connection is opened); every other libvirt call
blocks, so it runs in a thread pool of its own (:mod:`.libvirt_calls`).

- :meth:`LibvirtHypervisor.run` connects (and reconnects when libvirtd goes
  away), lists every domain and reports each to the host's
  :class:`~.base.Inventory`: its devices from the live XML, its agent channel,
  its status. Any event about a domain (lifecycle, device added or removed,
  ``virsh`` included) reads that domain again at once, in a task of its own,
  and reports what changed: a hash change and a notification.
- Hot-plug: ``attachDeviceFlags(LIVE)`` of a ``<disk>`` with the device's
  serial on an image the host makes; unplug: ``detachDeviceFlags``, done
  when ``DEVICE_REMOVED`` arrives. libvirt's refusals are
  :class:`LibvirtError` with libvirt's own message.
- qemu-ga: ``guestInfo(DISKS)`` (:mod:`.libvirt_guest`).
- A guest reboot (libvirt's ``REBOOT`` event) drops what both guest sources
  said (the agent's channel stays connected across it): the VM's names are
  stale until a source reports in the new boot (SPEC §17).
- A domain that goes away is first reported ``Down`` with no disks and no
  names (so the engine clears them), and forgotten ``GONE_GRACE`` later.

The pure parts (XML, ids, events, guest info) are :mod:`.libvirt_xml` and
:mod:`.libvirt_model`; images are :mod:`.libvirt_storage`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from pathlib import Path
from typing import Any

import libvirt

from ...protocol.disks import DEFAULT_DISK_SIZE
from ..devices import Device
from ..vm import AGENT, QEMU_GA, VmState
from . import libvirt_model as model
from .base import HypervisorError, Inventory
from .libvirt_calls import Calls, LibvirtError, register_event_loop
from .libvirt_guest import GuestInfoPoller
from .libvirt_storage import FileImages, Images, PoolDomains, PoolImages
from .libvirt_xml import BUSES, BadDomainXml, Domain, disk_xml, free_target, parse_domain

log = logging.getLogger(__name__)

THREADS = 8
UNPLUG_TIMEOUT = 10.0
GONE_GRACE = 30.0
KEEPALIVE = (5, 3)  # a silent libvirtd is given up after ~20 s
BACKOFF_INITIAL, BACKOFF_CAP = 0.5, 10.0
EVENTS = (
    model.EVENT_LIFECYCLE,
    model.EVENT_REBOOT,
    model.EVENT_DEVICE_ADDED,
    model.EVENT_DEVICE_REMOVED,
    model.EVENT_DEVICE_REMOVAL_FAILED,
    model.EVENT_AGENT_LIFECYCLE,
)


class LibvirtHypervisor:
    """A :class:`~.base.Hypervisor` over libvirt that owns its VMs (the domains)."""

    name = "libvirt"
    owns_vms = True

    def __init__(
        self,
        uri: str,
        images_dir: Path,
        pool: str | None = None,
        *,
        qemu_ga: bool = True,
        qga_interval: float = 30.0,
        unplug_timeout: float = UNPLUG_TIMEOUT,
    ) -> None:
        self.uri = uri
        self._qemu_ga, self._qga_interval = qemu_ga, qga_interval
        self._unplug_timeout = unplug_timeout
        self.call = Calls(THREADS)  # every blocking libvirt call goes through it
        self.images: Images = (
            PoolImages(pool, self.call, self._require) if pool else FileImages(images_dir)
        )
        self.pool_domains = PoolDomains(self.call, self._require)  # floating disks' images
        self._conn: Any = None
        self._callbacks: list[int] = []
        self._inventory: Inventory | None = None
        self._seen: dict[str, model.Seen] = {}
        self._domains: dict[str, Domain] = {}
        self._handles: dict[str, Any] = {}
        self._pollers: dict[str, GuestInfoPoller] = {}
        self._removals: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._reading: dict[str, asyncio.Task[None]] = {}
        self._graves: dict[str, asyncio.Task[None]] = {}
        self._running: asyncio.Task[Any] | None = None

    def _require(self) -> Any:
        if self._conn is None:
            raise LibvirtError(f"not connected to libvirt at {self.uri}")
        return self._conn

    # -- the Hypervisor seam ---------------------------------------------------

    def agent_channel(self, vm_id: str) -> Path | None:
        seen = self._seen.get(vm_id)
        return seen.channel if seen is not None else None

    async def start_vm(self, vm: VmState) -> None:
        """Nothing to start: libvirt runs the domain."""

    async def stop_vm(self, vm_id: str) -> None:
        """Nothing to tear down: libvirt runs the domain."""

    async def hotplug(self, vm: VmState, device: Device) -> Device:
        bus = BUSES.get(device.iface)
        if bus is None:
            raise LibvirtError(f"no libvirt disk bus for interface {device.iface!r}")
        alias = f"ua-{device.disk_id}"
        async with self._locks.setdefault(vm.id, asyncio.Lock()):
            handle, domain = await self._live(vm.id)
            images: Images = (
                self.pool_domains.images(device.domain) if device.domain else self.images
            )
            image, created = await images.ensure(device.disk_id, device.size or DEFAULT_DISK_SIZE)
            target = free_target(bus, domain.targets)
            xml = disk_xml(target=target, bus=bus, serial=device.serial, alias=alias, image=image)
            try:
                await self.call(handle.attachDeviceFlags, xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except LibvirtError as exc:
                if created:
                    await images.remove(device.disk_id)
                raise LibvirtError(f"libvirt refused to plug the disk: {exc}", exc.code) from None
            log.info("VM %s: plugged %s as %s (%s)", vm.id, device.disk_id, target, bus)
            _, domain = await self._live(vm.id)
            self._domains[vm.id] = domain
        plugged = domain.disk_by_alias(alias)
        # The device as libvirt placed it: its address, and the ids the live XML gives.
        return model.device_of(vm.id, plugged) if plugged is not None else device

    async def hotunplug(self, vm: VmState, device: Device) -> None:
        async with self._locks.setdefault(vm.id, asyncio.Lock()):
            handle, domain = await self._live(vm.id)
            disk = model.find_disk(domain, device.disk_id)
            if disk is not None:  # (a domain that is not running: libvirt says so)
                await self._detach(vm.id, handle, disk.alias or disk.target, disk.xml)
                _, self._domains[vm.id] = await self._live(vm.id)  # what discard checks

    async def _detach(self, vm_id: str, handle: Any, alias: str, xml: str) -> None:
        done = asyncio.get_running_loop().create_future()
        self._removals[(vm_id, alias)] = done
        try:
            try:
                await self.call(handle.detachDeviceFlags, xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
            except LibvirtError as exc:
                if exc.code == libvirt.VIR_ERR_DEVICE_MISSING:
                    return  # gone already
                raise LibvirtError(f"libvirt refused to unplug the disk: {exc}", exc.code) from None
            try:
                await asyncio.wait_for(asyncio.shield(done), self._unplug_timeout)
            except TimeoutError:
                raise LibvirtError(
                    f"the guest did not release {alias} within {self._unplug_timeout}s"
                    " (libvirt finishes the unplug if it does later)"
                ) from None
            log.info("VM %s: unplugged %s", vm_id, alias)
        finally:
            self._removals.pop((vm_id, alias), None)

    async def discard(self, disk_id: str) -> None:
        """Remove the image made for ``disk_id`` unless a domain still uses it."""
        for domain in self._domains.values():
            disk = model.find_disk(domain, disk_id)
            if disk is not None and self.images.owns(disk.source):
                log.warning("disk %s is plugged into %s: its image stays", disk_id, domain.uuid)
                return
        with contextlib.suppress(HypervisorError):
            if await self.images.remove(disk_id):
                log.info("removed the image of disk %s", disk_id)

    def poke(self, vm_id: str) -> None:
        poller = self._pollers.get(vm_id)
        if poller is not None:
            poller.poke()

    async def close(self) -> None:
        if self._running is not None and not self._running.done():
            self._running.cancel()  # no more events, reads or reconnects
            await asyncio.wait([self._running])
        tasks = [*self._reading.values(), *self._graves.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for poller in list(self._pollers.values()):
            await poller.stop()
        self._pollers.clear()
        await self._disconnect()
        self.call.shutdown()

    # -- connection ------------------------------------------------------------

    async def run(self, inventory: Inventory) -> None:
        """Follow libvirt until cancelled, reconnecting whenever libvirtd goes away."""
        register_event_loop()
        self._inventory, self._running = inventory, asyncio.current_task()
        backoff, failing = BACKOFF_INITIAL, False
        while True:
            try:
                closed = await self._connect()
                log.info("connected to libvirt at %s", self.uri)
                backoff, failing = BACKOFF_INITIAL, False
                await self._resync(inventory)
                await closed.wait()
                log.warning("lost the connection to libvirt at %s; reconnecting", self.uri)
            except LibvirtError as exc:
                level = logging.DEBUG if failing else logging.WARNING
                log.log(level, "libvirt at %s: %s (retrying)", self.uri, exc)
                failing = True
            await self._disconnect()
            await asyncio.sleep(backoff)  # sync-ok: reconnect back-off
            backoff = min(backoff * 2, BACKOFF_CAP)

    async def _connect(self) -> asyncio.Event:
        conn = await self.call(libvirt.open, self.uri)
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()
        self._conn = conn
        conn.registerCloseCallback(lambda *_: loop.call_soon_threadsafe(closed.set), None)
        for event_id in EVENTS:
            callback = functools.partial(self._on_event, loop, event_id)
            self._callbacks.append(conn.domainEventRegisterAny(None, event_id, callback, None))
        await self.call(conn.setKeepAlive, *KEEPALIVE)
        return closed

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._handles.clear()  # a domain handle belongs to its connection
        for poller in self._pollers.values():
            poller.pause()
        if conn is None:
            return
        callbacks, self._callbacks = self._callbacks, []
        with contextlib.suppress(LibvirtError, RuntimeError):  # RuntimeError: pool shut down
            for callback_id in callbacks:
                await self.call(conn.domainEventDeregisterAny, callback_id)
            await self.call(conn.unregisterCloseCallback)
        with contextlib.suppress(LibvirtError, RuntimeError):
            await self.call(conn.close)

    def _on_event(self, loop: asyncio.AbstractEventLoop, event_id: int, *args: Any) -> None:
        # libvirt's callback: (conn, dom, event args..., opaque).
        vm_id, reaction = args[1].UUIDString(), model.react(event_id, args[2:-1])
        loop.call_soon_threadsafe(self._react, vm_id, reaction)

    def _react(self, vm_id: str, reaction: model.Reaction) -> None:
        if reaction.removed_alias and (done := self._waiting(vm_id, reaction.removed_alias)):
            done.set_result(None)
        refused = reaction.removal_failed_alias
        if refused and (done := self._waiting(vm_id, refused)):
            done.set_exception(LibvirtError(f"the guest refused to release {refused}"))
        inventory = self._inventory
        if reaction.reset and inventory is not None:
            if (poller := self._pollers.get(vm_id)) is not None:
                poller.reset()  # an answer asked for before the reset is not of this boot
            inventory.guest_reset(vm_id, "the guest rebooted")
        if reaction.qga_gone and inventory is not None:
            inventory.guest_gone(vm_id, QEMU_GA, "qemu-ga disconnected")
        if reaction.ask_guest:
            self.poke(vm_id)
        if reaction.refresh:
            self._read_soon(vm_id)

    def _waiting(self, vm_id: str, alias: str) -> asyncio.Future[None] | None:
        """The unplug of ``alias`` waiting for libvirt's word, if there is one."""
        done = self._removals.get((vm_id, alias))
        return done if done is not None and not done.done() else None

    # -- domains -----------------------------------------------------------------

    async def _resync(self, inventory: Inventory) -> None:
        handles = await self.call(self._require().listAllDomains, 0)
        found = {handle.UUIDString(): handle for handle in handles}
        self._handles.update(found)
        for vm_id in sorted(found):
            self._read_soon(vm_id)
        for vm_id in sorted(inventory.vm_ids() - set(found)):
            await self._gone(vm_id, listed=True)

    def _read_soon(self, vm_id: str) -> None:
        """Read the domain again, in its own task: one VM's slow call holds up no other."""
        self._dirty.add(vm_id)
        task = self._reading.get(vm_id)
        if task is None or task.done():
            self._reading[vm_id] = asyncio.create_task(self._read_while_dirty(vm_id))

    async def _read_while_dirty(self, vm_id: str) -> None:
        while vm_id in self._dirty:
            self._dirty.discard(vm_id)
            try:
                await self._refresh(vm_id)
            except (LibvirtError, BadDomainXml) as exc:
                log.warning("VM %s: cannot read the domain: %s", vm_id, exc)
            except Exception:  # a task of its own: log it, the next event reads again
                log.exception("VM %s: reading the domain failed", vm_id)

    async def _live(self, vm_id: str) -> tuple[Any, Domain]:
        """The domain's handle and its live XML, read now."""
        handle = await self._handle(vm_id)
        _, xml = await self.call(_read, handle)
        return handle, parse_domain(xml)

    async def _handle(self, vm_id: str) -> Any:
        handle = self._handles.get(vm_id)
        if handle is None:
            handle = await self.call(self._require().lookupByUUIDString, vm_id)
            self._handles[vm_id] = handle
        return handle

    async def _refresh(self, vm_id: str) -> None:
        """Read the domain and report what changed (or that it is gone)."""
        try:
            handle = await self._handle(vm_id)
            state, xml = await self.call(_read, handle)
        except LibvirtError as exc:
            if exc.code != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            await self._gone(vm_id)
            return
        domain = parse_domain(xml)
        grave = self._graves.pop(vm_id, None)
        if grave is not None:
            grave.cancel()  # defined again before it was forgotten
        await self._report(vm_id, handle, model.seen(domain, state), domain)

    async def _report(self, vm_id: str, handle: Any, now: model.Seen, domain: Domain) -> None:
        inventory = self._inventory
        if inventory is None:
            return
        kind = model.report_kind(self._seen.get(vm_id), now)
        self._seen[vm_id], self._domains[vm_id] = now, domain
        if kind == "found":
            await inventory.vm_found(vm_id, now.name, now.devices, now.channel, now.status)
        elif kind == "devices":
            await inventory.vm_devices(vm_id, now.devices)
        if now.status == "Down":
            await self._guest_gone(vm_id)
        elif domain.qemu_ga and self._qemu_ga:
            self._poller(vm_id, handle, inventory).domain = domain

    def _poller(self, vm_id: str, handle: Any, inventory: Inventory) -> GuestInfoPoller:
        poller = self._pollers.get(vm_id)
        if poller is None:
            poller = GuestInfoPoller(vm_id, handle, self.call, inventory, self._qga_interval)
            self._pollers[vm_id] = poller
        poller.resume(handle)
        return poller

    async def _guest_gone(self, vm_id: str) -> None:
        """The guest stopped: what it said about its disks no longer holds."""
        poller = self._pollers.pop(vm_id, None)
        if poller is not None:
            await poller.stop()
        if self._inventory is not None:
            for source in (AGENT, QEMU_GA):
                self._inventory.guest_mapping(vm_id, source, {})
                self._inventory.guest_gone(vm_id, source)

    async def _gone(self, vm_id: str, listed: bool = False) -> None:
        """The domain is no more: a read found it gone (once), or a listing missed it."""
        before = self._seen.pop(vm_id, None)
        self._handles.pop(vm_id, None)
        self._domains.pop(vm_id, None)
        inventory = self._inventory
        if inventory is None or (before is None and not listed) or vm_id in self._graves:
            return
        log.info("VM %s: the domain is gone", vm_id)
        name = before.name if before is not None else vm_id
        await inventory.vm_found(vm_id, name, (), None, "Down")
        await self._guest_gone(vm_id)
        self._graves[vm_id] = asyncio.create_task(self._forget(inventory, vm_id))

    async def _forget(self, inventory: Inventory, vm_id: str) -> None:
        await asyncio.sleep(GONE_GRACE)  # sync-ok: let the engine see it Down first
        self._graves.pop(vm_id, None)
        await inventory.vm_gone(vm_id)


def _read(handle: Any) -> tuple[int, str]:
    """One domain's state and XML (live when it runs, else its definition)."""
    state, _reason = handle.state()
    return int(state), str(handle.XMLDesc(0))
