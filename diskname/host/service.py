"""The host service: VMs, their agent channels and hardware, the JSON-RPC server.

``run()`` is one TaskGroup. Start-up: recover VMs from ``state_dir``, start
their hardware and channels (and simulated guests, if a launcher was given),
then listen. Shutdown, in order: stop accepting JSON-RPC, close client
connections, stop every VM's channel and guest, close the hypervisor, write
the state one last time.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..protocol import jsonrpc
from .api import HostApi
from .channels import AgentChannel, channel_path
from .hypervisors.base import Hypervisor
from .hypervisors.sim import SimHypervisor, hw_path
from .qga import QgaChannel, qga_path
from .registry import Registry
from .rpc import RpcServer, server_ssl_context
from .vm import UnknownDevice, Vm

log = logging.getLogger(__name__)

GuestLauncher = Callable[[str, Path, Path], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class HostConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 54321
    state_dir: Path = Path("state/host")
    channels_dir: Path = Path("state/channels")
    # "connect" (SPEC §4): QEMU serves the socket. Dev mode and tests run the
    # agent themselves and it connects to us, so they pass "listen".
    channel_mode: str = "connect"
    hypervisor: str = "sim"
    host_id: str | None = None
    # Three missed 5-second heartbeats make an agent unresponsive.
    agent_timeout: float = 15.0
    # Messages per second a guest may send before the excess is dropped.
    agent_rate_limit: int = 1000
    # qemu-guest-agent as a second source (<vm_id>.org.qemu.guest_agent.0):
    # asked after every hot-plug and then every qga_interval seconds.
    qemu_ga: bool = True
    qga_interval: float = 30.0
    # JSON-RPC over TLS when tls_cert/tls_key are set; with tls_ca, clients
    # must present a certificate signed by it.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # When set, a connection must call Host.authenticate {token} first.
    rpc_token: str | None = None


def make_hypervisor(config: HostConfig) -> Hypervisor:
    if config.hypervisor == "sim":
        return SimHypervisor(config.channels_dir)
    if config.hypervisor == "qemu":
        from .hypervisors.qemu import QemuHypervisor

        return QemuHypervisor(config.channels_dir, config.state_dir)
    raise ConfigError(f"hypervisor {config.hypervisor!r} is not available (use sim or qemu)")


@dataclass
class _Running:
    """The live parts of one VM."""

    channel: AgentChannel
    qga: QgaChannel | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class HostService:
    def __init__(self, config: HostConfig, guest_launcher: GuestLauncher | None = None) -> None:
        if config.channel_mode not in ("listen", "connect"):
            raise ConfigError(f"channel mode must be listen or connect: {config.channel_mode!r}")
        self.config = config
        self.host_id = config.host_id or str(uuid.uuid5(uuid.NAMESPACE_DNS, socket.getfqdn()))
        self.registry = Registry(config.state_dir)
        self.hypervisor = make_hypervisor(config)
        self.hypervisor_name = config.hypervisor
        self.rpc = RpcServer(
            HostApi(self).methods(),
            ssl_context=server_ssl_context(config.tls_cert, config.tls_key, config.tls_ca),
            token=config.rpc_token,
        )
        self.registry.add_listener(self._hash_changed)
        self._launcher = guest_launcher
        self._running: dict[str, _Running] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._lock = asyncio.Lock()
        self.port = 0

    async def run(self, ready: asyncio.Event | None = None) -> None:
        self.config.channels_dir.mkdir(parents=True, exist_ok=True)
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self.registry.flush_forever(), name="host-state-writer")
            try:
                for vm in self.registry.load():
                    await self._start(vm)
                self.port = await self.rpc.start(self.config.listen_host, self.config.listen_port)
                log.info("host %s serving JSON-RPC on port %d", self.host_id, self.port)
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
        await self.registry.flush()
        self._tg = None

    # -- what the JSON-RPC methods call ------------------------------------

    def agent_status(self, vm: Vm) -> str:
        now = asyncio.get_running_loop().time()
        return vm.agent_status(now, self.config.agent_timeout)

    async def create_vm(self, vm_id: str, name: str, drives: list[dict[str, Any]]) -> Vm:
        async with self._lock:
            existing = self.registry.find(vm_id)
            if existing is not None:
                return existing
            vm = Vm(id=vm_id, name=name)
            for drive in drives:
                vm.plug(drive)
            await self._start(vm)
            self.registry.add(vm)
            await self.registry.flush()
            return vm

    async def destroy_vm(self, vm_id: str) -> None:
        async with self._lock:
            self.registry.remove(vm_id)
            await self._stop(vm_id)
            await self.registry.flush()

    async def hotplug(self, vm_id: str, drive: dict[str, Any]) -> dict[str, Any]:
        """Plug through the hypervisor; the VM, its hash and its state change only
        once the hypervisor confirmed (a refusal leaves everything as it was)."""
        vm = self.registry.get(vm_id)
        device = vm.new_device(drive)
        existing = vm.device(device["diskId"])
        if existing is not None:
            return existing
        await self.hypervisor.hotplug(vm, device)
        vm.add_device(device)
        await self._changed(vm)
        return device

    async def hotunplug(self, vm_id: str, disk_id: str) -> None:
        vm = self.registry.get(vm_id)
        device = vm.device(disk_id)
        if device is None:
            raise UnknownDevice(disk_id)
        await self.hypervisor.hotunplug(vm, device)
        vm.unplug(disk_id)
        await self._changed(vm)

    async def _changed(self, vm: Vm) -> None:
        self.registry.changed(vm)
        self._poke_qga(vm.id)
        await self.registry.flush()  # acknowledged means it survives a restart

    # -- per-VM runtime ------------------------------------------------------

    async def _start(self, vm: Vm) -> None:
        tg = self._tg
        if tg is None or vm.id in self._running:
            return
        await self.hypervisor.start_vm(vm)
        channels = self.config.channels_dir
        channel = AgentChannel(
            vm,
            channel_path(channels, vm.id),
            self.config.channel_mode,
            self.registry.changed,
            rate_limit=self.config.agent_rate_limit,
        )
        running = _Running(channel)
        running.tasks.append(tg.create_task(_guarded(f"channel {vm.id}", channel.run())))
        if self.config.qemu_ga:
            running.qga = QgaChannel(
                vm, qga_path(channels, vm.id), self.registry.changed, self.config.qga_interval
            )
            running.tasks.append(tg.create_task(_guarded(f"qemu-ga {vm.id}", running.qga.run())))
        if self._launcher is not None:
            guest = self._launcher(vm.id, channel.path, hw_path(channels, vm.id))
            running.tasks.append(tg.create_task(_guarded(f"guest {vm.id}", guest)))
        self._running[vm.id] = running

    async def _stop(self, vm_id: str) -> None:
        running = self._running.pop(vm_id, None)
        if running is not None:
            for task in running.tasks:
                task.cancel()
            await asyncio.wait(running.tasks, timeout=5.0)
        await self.hypervisor.stop_vm(vm_id)

    def _poke_qga(self, vm_id: str) -> None:
        running = self._running.get(vm_id)
        if running is not None and running.qga is not None:
            running.qga.poke()

    def _hash_changed(self, vm: Vm) -> None:
        self.rpc.notify(jsonrpc.vm_status_event(vm.id, vm.hash))


async def _guarded(what: str, coro: Coroutine[Any, Any, None]) -> None:
    """Run a per-VM task; its failure is logged, not fatal to the host."""
    try:
        await coro
    except Exception:
        log.exception("%s failed", what)
