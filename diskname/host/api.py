"""The host's JSON-RPC methods (SPEC §5): parameter checks and result shapes.

The VM lifecycle itself lives in :mod:`.service`; this module only turns
params into calls and VMs into VDSM-shaped, camelCase JSON.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import orjson

from .. import __version__
from ..protocol import host_wire as wire
from ..protocol import jsonrpc
from ..protocol.guest_wire import asked_cursor, wall_time
from ..protocol.host_wire import Code
from ..protocol.limits import MAX_DEVICES_PER_VM, MAX_RPC_FRAME, RPC_ENVELOPE
from ..protocol.storage_wire import BadHostMessage, ImageRequest, check_domain_name
from .devices import MAX_TEXT, Device, InvalidDevice, NoFreeAddress, UnknownDevice
from .hypervisors.base import HypervisorError
from .registry import Registry, UnknownVm
from .rpc import Handler, MethodError
from .statefiles import StateNotWritten
from .stats import StatsCache, stats_reply
from .storage import Domains
from .vm import Vm


class Lifecycle(Protocol):
    """What the methods need from the service."""

    registry: Registry
    host_id: str
    hypervisor_name: str

    def confirmed_after(self, cursor: str) -> dict[str, Any] | None: ...
    async def create_vm(self, vm_id: str, name: str, drives: list[dict[str, Any]]) -> Vm: ...
    async def destroy_vm(self, vm_id: str) -> None: ...
    async def hotplug(self, vm_id: str, drive: dict[str, Any]) -> Device: ...
    async def hotunplug(self, vm_id: str, disk_id: str, discard: bool = False) -> None: ...

    @property
    def storage(self) -> Domains: ...


def _invalid(message: str) -> MethodError:
    return MethodError(jsonrpc.INVALID_PARAMS, message)


def uuid_param(params: dict[str, Any], key: str) -> str:
    """A canonical lower-case UUID (it also names files: no path tricks)."""
    value = params.get(key)
    try:
        if isinstance(value, str) and str(uuid.UUID(value)) == value:
            return value
    except ValueError:
        pass
    raise _invalid(f"{key} must be a lower-case UUID")


def _text_param(params: dict[str, Any], key: str) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise _invalid(f"{key} must be a non-empty string")
    return value


def _drive(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _invalid("a drive must be an object")
    uuid_param(raw, "diskId")
    return raw


def agent_info(vm: Vm) -> wire.AgentInfo:
    """The VM's guest agent: it moves when a guest source comes or goes (SPEC §17),
    never with a guest merely repeating itself. Every poll asks for every VM's, so
    it is built again only when it may have moved (the quiet fleet's host CPU)."""
    fresh = vm.freshness
    key = (fresh.revision, vm.api_version)
    if vm.agent_memo is not None and vm.agent_memo[0] == key:
        return vm.agent_memo[1]
    info = wire.AgentInfo(fresh.status, vm.api_version, wall_time(fresh.since), fresh.sources)
    vm.agent_memo = (key, info)
    return info


def vm_stats(vm: Vm) -> wire.StatsEntry:
    return wire.StatsEntry(vm.id, vm.state.status, vm.hash, agent_info(vm))


def vm_full(vm: Vm) -> wire.FullVm:
    devices = tuple(
        wire.DiskDevice(d.device_id, d.disk_id, d.serial, d.iface, d.address, d.plugged)
        for d in vm.state.devices
    )
    state = vm.state
    return wire.FullVm(vm.id, vm.name, state.status, vm.hash, devices, vm.mapping, agent_info(vm))


def full_list(vms: Iterable[Vm], budget: int = MAX_RPC_FRAME - RPC_ENVELOPE) -> list[Any]:
    """``Host.getVMFullList``'s result, cut to ``budget`` bytes (SPEC §12).

    VMs that do not fit this time are listed as ``{"vmId", "deferred": true}``
    (the engine asks again); a VM too large to fit any reply is an error entry
    for that VM alone, so one guest's huge mapping never starves its neighbours.
    """
    out: list[Any] = []
    used = 2
    for vm in vms:
        try:
            blob = orjson.dumps(vm_full(vm).to_wire())
        except wire.BadHostMessage as exc:  # a text over its cap: this VM alone
            blob, entry = _too_large(vm, f"the VM's description breaks a limit: {exc}")
        else:
            if len(blob) > budget - 2:
                message = f"the VM's description is {len(blob)} bytes, over the {budget}-byte"
                blob, entry = _too_large(vm, message + " reply budget")
            elif used + len(blob) + 1 > budget:
                entry = wire.Deferred(vm.id).to_wire()
                blob = orjson.dumps(entry)
            else:
                entry = orjson.Fragment(blob)
        used += len(blob) + 1
        out.append(entry)
    return out


def _too_large(vm: Vm, message: str) -> tuple[bytes, Any]:
    entry = wire.VmError(vm.id, Code.VM_TOO_LARGE, message).to_wire()
    return orjson.dumps(entry), entry


class HostApi:
    def __init__(self, owner: Lifecycle) -> None:
        self._owner = owner
        self._stats = StatsCache()

    def methods(self) -> dict[str, Handler]:
        table: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "Host.ping": self.ping,
            "Host.getCapabilities": self.get_capabilities,
            "Host.getAllVmStats": self.get_all_vm_stats,
            "Host.getVMFullList": self.get_vm_full_list,
            "Host.getStats": self.get_stats,
            "Host.getVmStats": self.get_vm_stats,
            "VM.create": self.create,
            "VM.destroy": self.destroy,
            "VM.hotplugDisk": self.hotplug_disk,
            "VM.hotunplugDisk": self.hotunplug_disk,
            "Host.getStorageDomains": self.get_storage_domains,
            "Image.create": self.create_image,
            "Image.delete": self.delete_image,
        }
        return {name: _translated(fn) for name, fn in table.items()}

    async def ping(self, params: dict[str, Any]) -> bool:
        return True

    async def get_capabilities(self, params: dict[str, Any]) -> dict[str, Any]:
        owner = self._owner
        return {
            "hostId": owner.host_id,
            "version": __version__,
            "hypervisor": owner.hypervisor_name,
        }

    async def get_all_vm_stats(self, params: dict[str, Any]) -> Any:
        """The list; with ``{"digest"}`` an object that leaves it out if unchanged (SPEC §5),
        and with ``{"confirmed": cursor}`` the guests' confirmations since (SPEC §17),
        left out when there are none."""
        owner = self._owner
        snapshot = self._stats.snapshot(owner.registry, vm_stats)
        cursor = asked_cursor(params)
        confirmed = None if cursor is None else owner.confirmed_after(cursor)
        return stats_reply(snapshot, wire.asked_digest(params), confirmed)

    async def get_vm_full_list(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            wanted = wire.asked_vms(params)
        except wire.BadHostMessage as exc:
            raise _invalid(str(exc)) from None
        vms = self._owner.registry
        chosen = list(vms) if wanted is None else [v for i in wanted if (v := vms.find(i))]
        return full_list(chosen)

    async def get_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        vms = list(self._owner.registry)
        return {"vmCount": len(vms), "rejected": {vm.id: dict(vm.rejected) for vm in vms}}

    async def get_vm_stats(self, params: dict[str, Any]) -> dict[str, Any]:
        vm = self._owner.registry.get(uuid_param(params, "vmId"))
        entry = vm_stats(vm).to_wire()
        confirmed = {s: wall_time(t) for s, t in vm.freshness.confirmed.items()}
        entry["confirmed"] = confirmed
        return {**entry, "name": vm.name, "rejected": dict(vm.rejected)}

    async def create(self, params: dict[str, Any]) -> dict[str, Any]:
        vm_id = uuid_param(params, "vmId")
        name = _text_param(params, "name")
        devices = params.get("devices", [])
        if not isinstance(devices, list):
            raise _invalid("devices must be a list")
        if len(devices) > MAX_DEVICES_PER_VM:
            raise _invalid(f"a VM has at most {MAX_DEVICES_PER_VM} disks")
        vm = await self._owner.create_vm(vm_id, name, [_drive(d) for d in devices])
        return vm_full(vm).to_wire()

    async def destroy(self, params: dict[str, Any]) -> bool:
        await self._owner.destroy_vm(uuid_param(params, "vmId"))
        return True

    async def hotplug_disk(self, params: dict[str, Any]) -> dict[str, Any]:
        vm_id = uuid_param(params, "vmId")
        device = await self._owner.hotplug(vm_id, _drive(params.get("drive")))
        return device.to_json()

    async def hotunplug_disk(self, params: dict[str, Any]) -> bool:
        vm_id = uuid_param(params, "vmId")
        # discard: the disk leaves the VM for good (a DELETE), so an image the
        # hypervisor made for it may go.
        discard = params.get("discard", False)
        if not isinstance(discard, bool):
            raise _invalid("discard must be true or false")
        await self._owner.hotunplug(vm_id, uuid_param(params, "diskId"), discard)
        return True

    async def get_storage_domains(self, params: dict[str, Any]) -> dict[str, Any]:
        domains = await self._owner.storage.list()
        return {"domains": [d.to_wire() for d in domains]}

    async def create_image(self, params: dict[str, Any]) -> bool:
        try:
            request = ImageRequest.from_wire(params)
        except BadHostMessage as exc:
            raise _invalid(str(exc)) from None
        await self._owner.storage.create(request)
        return True

    async def delete_image(self, params: dict[str, Any]) -> bool:
        disk_id = uuid_param(params, "diskId")
        try:
            domain = check_domain_name(params.get("storageDomain"))
        except BadHostMessage as exc:
            raise _invalid(str(exc)) from None
        return await self._owner.storage.delete(domain, disk_id)


def _translated(fn: Handler) -> Handler:
    """Turn the lifecycle's own errors into JSON-RPC errors."""

    async def call(params: dict[str, Any]) -> Any:
        try:
            return await fn(params)
        except UnknownVm as exc:
            raise MethodError(Code.UNKNOWN_VM, f"unknown VM {exc.args[0]}") from None
        except UnknownDevice as exc:
            raise MethodError(Code.UNKNOWN_DEVICE, f"unknown disk {exc.args[0]}") from None
        except InvalidDevice as exc:
            raise _invalid(str(exc)) from None
        except NoFreeAddress as exc:
            raise MethodError(Code.CONFLICT, str(exc)) from None
        except HypervisorError as exc:
            raise MethodError(Code.HYPERVISOR_ERROR, str(exc)) from None
        except StateNotWritten as exc:
            message = f"{exc}; the change was refused and undone"
            raise MethodError(Code.STATE_NOT_WRITTEN, message) from None

    return call
