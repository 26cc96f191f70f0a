"""The host service: VMs, their agent channels and hardware, the JSON-RPC server.

``run()`` is one TaskGroup. Start-up: recover VMs from ``state_dir``, start
their hardware and channels (and simulated guests, if a launcher was given),
start the hypervisor's watcher (libvirt reports its domains through
:class:`~.hypervisors.base.Inventory`), then listen. Shutdown, in order: stop
accepting JSON-RPC, close client connections, stop every VM's channel and guest,
close the hypervisor, write the state one last time.

Changes to one VM (plug, unplug, destroy, a device change the hypervisor
reports) run under that VM's lock, so two plugs cannot take one address and a
slow unplug holds back only its own VM. Hash changes reach the engine through a
per-VM :class:`~diskname.damping.Damper`.

A change asked for over JSON-RPC is acknowledged only once the VM's state file
holds it: when the file cannot be written (a full state directory), the change is
undone (the hypervisor too) and refused with ``STATE_NOT_WRITTEN`` (SPEC §19).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections import defaultdict
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..binding import ensure_free, translated
from ..config import ConfigError
from ..damping import Damper
from ..protocol.guest_view import clean_mapping
from ..protocol.guest_wire import confirmed_wire
from ..protocol.host_wire import vm_status_event
from ..protocol.limits import MAX_DEVICES_PER_VM
from .api import HostApi
from .channels import AgentChannel, channel_path
from .config import HostConfig, check_listen, rpc_limits
from .confirmations import Confirmations
from .devices import Addresses, Device, InvalidDevice, UnknownDevice, device_for, devices_for
from .hypervisors.base import Hypervisor
from .hypervisors.factory import make_hypervisor, make_storage
from .hypervisors.sim import hw_path
from .qga import QgaChannel, qga_path
from .registry import Registry, UnknownVm
from .rpc import RpcServer, server_ssl_context
from .statefiles import StateFiles, StateNotWritten, private_dir
from .storage import Domains
from .vm import AGENT, QEMU_GA, Vm, VmState

log = logging.getLogger(__name__)

GuestLauncher = Callable[[str, Path, Path], Coroutine[Any, Any, None]]


@dataclass
class _Running:
    """The live parts of one VM."""

    channel: AgentChannel
    qga: QgaChannel | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class HostService:
    def __init__(
        self,
        config: HostConfig,
        guest_launcher: GuestLauncher | None = None,
        hypervisor: Hypervisor | None = None,
    ) -> None:
        check_listen(config)
        if config.channel_mode not in ("listen", "connect"):
            raise ConfigError(f"channel mode must be listen or connect: {config.channel_mode!r}")
        self.config = config
        self.host_id = config.host_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, socket.getfqdn()))
        self.registry = Registry()
        self.state_files = StateFiles(config.state_dir / "vms", self.registry.state)
        self.registry.on_state_change(self.state_files.mark)
        # A backend built by the caller (the bench's light guests) or by name.
        self.hypervisor = hypervisor or make_hypervisor(config)
        self.hypervisor_name: str = config.hypervisor
        self.storage: Domains = make_storage(config, self.hypervisor)
        self.rpc = RpcServer(
            HostApi(self).methods(),
            ssl_context=server_ssl_context(config.tls_cert, config.tls_key, config.tls_ca),
            token=config.rpc_token,
            limits=rpc_limits(config),
        )
        self.damper = Damper(config.notify_rate, config.notify_burst)
        self._damper_timer: asyncio.TimerHandle | None = None
        self.registry.on_hash_change(self._hash_changed)
        self.confirmations = Confirmations()
        self._launcher = guest_launcher
        self._running: dict[str, _Running] = {}
        self._channels: dict[str, Path] = {}  # agent channels the hypervisor placed
        self._tg: asyncio.TaskGroup | None = None
        self._create_lock = asyncio.Lock()
        self._vm_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.port = 0

    async def run(self, ready: asyncio.Event | None = None) -> None:
        rpc = self.config.listen_host, self.config.listen_port
        ensure_free("JSON-RPC", *rpc, setting="listen_port")
        private_dir(self.config.state_dir)
        self.config.channels_dir.mkdir(parents=True, exist_ok=True)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self.state_files.flush_forever(), name="host-state-writer")
            try:
                for vm in self.registry.recover(self.state_files.load()):
                    await self._start(vm)
                tg.create_task(self.hypervisor.run(self), name="hypervisor")
                with translated("JSON-RPC", *rpc, setting="listen_port"):
                    self.port = await self.rpc.start(*rpc)
                log.info(
                    "host %s serving JSON-RPC on port %d (register it in the engine with"
                    ' "id": "%s" and both show the same id)',
                    self.host_id,
                    self.port,
                    self.host_id,
                )
                if ready is not None:
                    ready.set()
                await asyncio.Future()
            finally:
                await self._shutdown()

    async def _shutdown(self) -> None:
        await self.rpc.close()
        for vm_id in list(self._running):
            await self._stop(vm_id)
        await self.hypervisor.close()
        await self.state_files.flush()
        if self._damper_timer is not None:
            self._damper_timer.cancel()
        self._tg = None

    # -- what the JSON-RPC methods call ------------------------------------

    def agent_status(self, vm: Vm) -> str:
        """``up``, ``unresponsive`` or ``none`` (SPEC §17)."""
        return vm.agent_status()

    def confirmed_after(self, cursor: str) -> dict[str, Any] | None:
        """Guests that confirmed after ``cursor`` (:mod:`.confirmations`); None if current."""
        if cursor == self.confirmations.cursor:
            return None
        cursor, vm_ids = self.confirmations.after(cursor)
        found = ((vm_id, self.registry.find(vm_id)) for vm_id in vm_ids)
        return confirmed_wire(cursor, {i: vm.freshness.confirmed for i, vm in found if vm})

    async def create_vm(self, vm_id: str, name: str, drives: list[dict[str, Any]]) -> Vm:
        if self.hypervisor.owns_vms:
            raise InvalidDevice(f"VMs of a {self.hypervisor_name} host are defined there")
        devices = devices_for(drives)  # validated before any lock is taken
        async with self._create_lock:
            existing = self.registry.find(vm_id)
            if existing is not None:
                return existing
            vm = self.registry.create(VmState.new(vm_id, name, devices))
            await self._start(vm)
            try:
                await self.state_files.persist(vm_id)
            except StateNotWritten:
                self.registry.remove(vm_id)  # as if never asked
                await self._stop(vm_id)
                raise
            return vm

    async def destroy_vm(self, vm_id: str) -> None:
        async with self._create_lock, self._vm_locks[vm_id]:
            self.registry.remove(vm_id)
            self.confirmations.forget(vm_id)
            await self._stop(vm_id)
            # Removing a file needs no room: a failure is retried, not refused.
            await self.state_files.persist_or_retry(vm_id)
        self._vm_locks.pop(vm_id, None)

    async def hotplug(self, vm_id: str, drive: dict[str, Any]) -> Device:
        """Plug through the hypervisor; the VM, its hash and its state change only
        once the hypervisor confirmed (a refusal leaves everything as it was)."""
        self.registry.get(vm_id)
        async with self._vm_locks[vm_id]:
            vm = self.registry.get(vm_id)  # it may have gone while we waited
            existing = vm.state.device(str(drive.get("diskId")))
            if existing is not None:
                return existing
            if len(vm.devices) >= MAX_DEVICES_PER_VM:
                raise InvalidDevice(f"a VM has at most {MAX_DEVICES_PER_VM} disks")
            device = device_for(drive, Addresses(vm.devices))
            placed = await self.hypervisor.hotplug(vm.state, device)
            self.registry.add_device(vm_id, placed)
            try:
                await self._changed(vm_id)
            except StateNotWritten:
                await self._undo(vm_id, lambda: self._unplug_now(vm_id, placed))
                raise
            return placed

    async def hotunplug(self, vm_id: str, disk_id: str, discard: bool = False) -> None:
        """Unplug; with ``discard`` the disk leaves the VM for good (its image may go)."""
        self.registry.get(vm_id)
        async with self._vm_locks[vm_id]:
            vm = self.registry.get(vm_id)
            device = vm.state.device(disk_id)
            if device is None:
                raise UnknownDevice(disk_id)
            await self._unplug_now(vm_id, device)
            try:
                await self._changed(vm_id)
            except StateNotWritten:
                await self._undo(vm_id, lambda: self._plug_now(vm_id, device))
                raise
        if discard:
            await self.hypervisor.discard(disk_id)

    async def _changed(self, vm_id: str, *, refusable: bool = True) -> None:
        """Poke the guest's sources and write the state: acknowledged means it survives
        a restart (:class:`StateNotWritten` when it would not, for a refusable change)."""
        self._poke_guest_sources(vm_id)
        if refusable:
            await self.state_files.persist(vm_id)
        else:
            await self.state_files.persist_or_retry(vm_id)

    async def _plug_now(self, vm_id: str, device: Device) -> None:
        placed = await self.hypervisor.hotplug(self.registry.get(vm_id).state, device)
        self.registry.add_device(vm_id, placed)

    async def _unplug_now(self, vm_id: str, device: Device) -> None:
        await self.hypervisor.hotunplug(self.registry.get(vm_id).state, device)
        self.registry.remove_device(vm_id, device.disk_id)

    async def _undo(self, vm_id: str, undo: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Put a change the state file could not hold back as it was (the file still
        holds the old state). If the hypervisor refuses, the VM stays as it really is."""
        try:
            await undo()
        except Exception:
            log.exception("VM %s: cannot undo a change its state file could not hold", vm_id)
        self._poke_guest_sources(vm_id)

    # -- what a hypervisor that owns its VMs reports (Inventory) -------------

    def vm_ids(self) -> frozenset[str]:
        return frozenset(vm.id for vm in self.registry)

    async def vm_found(
        self,
        vm_id: str,
        name: str,
        devices: Sequence[Device],
        channel: Path | None,
        status: str = "Up",
    ) -> None:
        if channel is not None:
            self._channels[vm_id] = channel
        async with self._create_lock:
            vm = self.registry.find(vm_id)
            if vm is None:
                state = VmState.new(vm_id, name, tuple(devices), status=status)
                vm = self.registry.create(state)
            else:
                self.registry.set_devices(vm_id, tuple(devices))
                self.registry.set_status(vm_id, status)
            running = self._running.get(vm_id)
            if running is not None and running.channel.path != self._channel_path(vm_id):
                await self._stop(vm_id)  # a restarted domain: its agent socket moved
            await self._start(vm)
            await self.state_files.persist_or_retry(vm_id)

    async def vm_devices(self, vm_id: str, devices: Sequence[Device]) -> None:
        async with self._vm_locks[vm_id]:
            if self.registry.find(vm_id) is None:
                return
            self.registry.set_devices(vm_id, tuple(devices))
            await self._changed(vm_id, refusable=False)  # what the hypervisor already did

    async def vm_gone(self, vm_id: str) -> None:
        if self.registry.find(vm_id) is not None:
            await self.destroy_vm(vm_id)
        self._channels.pop(vm_id, None)

    def guest_mapping(self, vm_id: str, source: str, mapping: Mapping[str, Any]) -> None:
        """A mapping the hypervisor reports for its guest (no heartbeat: it speaks for it)."""
        self._guest_report(vm_id, source, mapping, heartbeats=False)

    def _guest_report(
        self, vm_id: str, source: str, mapping: Mapping[str, Any], *, heartbeats: bool
    ) -> None:
        """Every mapping a guest source sends, changed or not, confirms its names (SPEC §17);
        every source's entries pass the view's grammar here, in one place."""
        if (vm := self.registry.find(vm_id)) is None:
            return
        cleaned, dropped = clean_mapping(mapping)
        for reason, count in sorted(dropped.items()):
            vm.reject(reason, count)
        self.registry.set_mapping(vm_id, source, cleaned)
        vm.source_confirmed(source, asyncio.get_running_loop().time(), heartbeats=heartbeats)
        self.confirmations.note(vm_id)

    def guest_gone(self, vm_id: str, source: str, why: str = "the guest stopped") -> None:
        self.registry.source_gone(vm_id, source, why)

    def guest_reset(self, vm_id: str, why: str) -> None:
        self.registry.guest_reset(vm_id, why)
        self._poke_guest_sources(vm_id)  # ask qemu-ga again as the new boot settles

    def guest_rejected(self, vm_id: str, reason: str) -> None:
        if (vm := self.registry.find(vm_id)) is not None:
            vm.reject(reason)

    # -- per-VM runtime ------------------------------------------------------

    def _channel_path(self, vm_id: str) -> Path:
        placed = self._channels.get(vm_id) or self.hypervisor.agent_channel(vm_id)
        return placed or channel_path(self.config.channels_dir, vm_id)

    async def _start(self, vm: Vm) -> None:
        tg = self._tg
        if tg is None or vm.id in self._running:
            return
        await self.hypervisor.start_vm(vm.state)
        if not self.config.agent_channels:
            return  # nothing runs per VM: the hypervisor speaks for its guests
        channels, vm_id = self.config.channels_dir, vm.id
        channel = AgentChannel(
            vm,
            self._channel_path(vm_id),
            self.config.channel_mode,
            lambda mapping: self._guest_report(vm_id, AGENT, mapping, heartbeats=True),
            rate_limit=self.config.agent_rate_limit,
            timeout=self.config.agent_timeout,
        )
        running = _Running(channel)
        running.tasks.append(tg.create_task(_guarded(f"channel {vm_id}", channel.run())))
        if self.config.qemu_ga and not self.hypervisor.owns_vms:
            running.qga = QgaChannel(
                vm,
                qga_path(channels, vm_id),
                lambda mapping: self._guest_report(vm_id, QEMU_GA, mapping, heartbeats=False),
                self.config.qga_interval,
            )
            running.tasks.append(tg.create_task(_guarded(f"qemu-ga {vm_id}", running.qga.run())))
        if self._launcher is not None:
            guest = self._launcher(vm_id, channel.path, hw_path(channels, vm_id))
            running.tasks.append(tg.create_task(_guarded(f"guest {vm_id}", guest)))
        self._running[vm_id] = running

    async def _stop(self, vm_id: str) -> None:
        running = self._running.pop(vm_id, None)
        if running is not None:
            for task in running.tasks:
                task.cancel()
            await asyncio.wait(running.tasks, timeout=5.0)
        self.damper.forget(vm_id)
        await self.hypervisor.stop_vm(vm_id)

    def _poke_guest_sources(self, vm_id: str) -> None:
        if (running := self._running.get(vm_id)) is not None and running.qga is not None:
            running.qga.poke()
        self.hypervisor.poke(vm_id)

    # -- notifications, damped per VM ----------------------------------------

    def _hash_changed(self, vm: Vm) -> None:
        loop = asyncio.get_running_loop()
        if self.damper.offer(vm.id, vm.hash, loop.time()):
            self.rpc.notify(vm_status_event(vm.id, vm.hash))
        else:
            self._arm_damper(loop)

    def _arm_damper(self, loop: asyncio.AbstractEventLoop) -> None:
        due = self.damper.next_due()
        if due is None or self._damper_timer is not None:
            return
        self._damper_timer = loop.call_at(due, self._release_held)

    def _release_held(self) -> None:
        self._damper_timer = None
        loop = asyncio.get_running_loop()
        for vm_id, vm_hash in self.damper.due(loop.time()):
            if self.registry.find(vm_id) is not None:
                self.rpc.notify(vm_status_event(vm_id, vm_hash))
        self._arm_damper(loop)


async def _guarded(what: str, coro: Coroutine[Any, Any, None]) -> None:
    """Run a per-VM task; its failure is logged, not fatal to the host."""
    try:
        await coro
    except Exception:
        log.exception("%s failed", what)


__all__ = ["GuestLauncher", "HostConfig", "HostService", "UnknownVm", "make_hypervisor"]
