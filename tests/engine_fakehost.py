"""A small fake host for the engine's tests: a JSON-RPC server over a real loopback socket.

It keeps VMs (devices and a guest disk mapping), hashes them the way SPEC §4
says, answers the methods of SPEC §5 and notifies on every hash change. With
``auto_guest`` it also plays the guest: a plugged disk gets the lowest free
``/dev/vdX`` name in the mapping, keyed by its serial.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from diskname.protocol import jsonrpc
from diskname.protocol.hashing import vm_hash
from diskname.protocol.host_wire import Code, vm_status_event
from diskname.streams import close_writer, read_lines


@dataclass
class FakeVm:
    vm_id: str
    name: str
    status: str = "up"
    devices: list[dict[str, Any]] = field(default_factory=list)
    mapping: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return vm_hash(self.devices, self.mapping)

    def full(self) -> dict[str, Any]:
        return {
            "vmId": self.vm_id,
            "name": self.name,
            "status": self.status,
            "hash": self.hash,
            "devices": self.devices,
            "guestDiskMapping": self.mapping,
        }


class FakeHost:
    def __init__(self, *, auto_guest: bool = False, notify: bool = True) -> None:
        self.vms: dict[str, FakeVm] = {}
        self.calls: Counter[str] = Counter()
        self.auto_guest = auto_guest
        self.notify_enabled = notify
        self.fail: dict[str, int] = {}
        self.silent: set[str] = set()  # methods never answered
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._slot = 5
        self.port = 0

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_connections()
        if self._server is not None:
            await self._server.wait_closed()

    async def drop_connections(self) -> None:
        for writer in list(self._writers):
            await close_writer(writer)

    @property
    def connections(self) -> int:
        return len(self._writers)

    # -- state helpers for tests -------------------------------------------------

    def add_vm(self, vm_id: str, name: str = "vm") -> FakeVm:
        vm = self.vms[vm_id] = FakeVm(vm_id, name)
        return vm

    def set_mapping(self, vm_id: str, mapping: dict[str, dict[str, Any]]) -> None:
        self.vms[vm_id].mapping = mapping
        self.notify(vm_id)

    def notify(self, vm_id: str) -> None:
        if not self.notify_enabled:
            return
        frame = jsonrpc.encode_frame(vm_status_event(vm_id, self.vms[vm_id].hash))
        for writer in self._writers:
            writer.write(frame)

    # -- the server ----------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            async for line in read_lines(reader):
                if isinstance(line, bytes) and not self._ignored(line):
                    writer.write(jsonrpc.encode_frame(self._answer(line)))
        finally:
            self._writers.discard(writer)
            await close_writer(writer)

    def _ignored(self, line: bytes) -> bool:
        with contextlib.suppress(jsonrpc.JsonRpcError):
            frame = jsonrpc.parse_frame(line)
            return isinstance(frame, jsonrpc.Request) and frame.method in self.silent
        return False

    def _answer(self, line: bytes) -> jsonrpc.Frame:
        try:
            frame = jsonrpc.parse_frame(line)
        except jsonrpc.JsonRpcError as exc:
            return exc.to_response()
        assert isinstance(frame, jsonrpc.Request)
        self.calls[frame.method] += 1
        params = frame.params if isinstance(frame.params, dict) else {}
        if frame.method in self.fail:
            return jsonrpc.ErrorResponse(frame.id, self.fail[frame.method], "injected failure")
        handler = getattr(self, "_" + frame.method.replace(".", "_"), None)
        if handler is None:
            return jsonrpc.ErrorResponse(frame.id, jsonrpc.METHOD_NOT_FOUND, frame.method)
        try:
            return jsonrpc.Response(frame.id, handler(params))
        except KeyError as exc:
            return jsonrpc.ErrorResponse(frame.id, Code.UNKNOWN_VM, f"unknown {exc}")
        except LookupError as exc:
            return jsonrpc.ErrorResponse(frame.id, Code.UNKNOWN_DEVICE, str(exc))

    def _Host_ping(self, params: dict[str, Any]) -> Any:
        return True

    def _Host_getAllVmStats(self, params: dict[str, Any]) -> Any:
        return [
            {
                "vmId": vm.vm_id,
                "status": vm.status,
                "hash": vm.hash,
                "agent": {"status": "up", "apiVersion": 3},
            }
            for vm in self.vms.values()
        ]

    def _Host_getVMFullList(self, params: dict[str, Any]) -> Any:
        wanted = params.get("vmList")
        return [vm.full() for vm in self.vms.values() if wanted is None or vm.vm_id in wanted]

    def _VM_create(self, params: dict[str, Any]) -> Any:
        vm = self.add_vm(params["vmId"], params.get("name", "vm"))
        for device in params.get("devices", []):
            self._plug(vm, dict(device))
        self.notify(vm.vm_id)
        return vm.full()

    def _VM_destroy(self, params: dict[str, Any]) -> Any:
        del self.vms[params["vmId"]]
        return True

    def _VM_hotplugDisk(self, params: dict[str, Any]) -> Any:
        vm = self.vms[params["vmId"]]
        device = self._plug(vm, dict(params["drive"]))
        self.notify(vm.vm_id)
        return device

    def _VM_hotunplugDisk(self, params: dict[str, Any]) -> Any:
        vm = self.vms[params["vmId"]]
        found = [d for d in vm.devices if d["diskId"] == params["diskId"]]
        if not found:
            raise LookupError(f"no device for disk {params['diskId']}")
        vm.devices.remove(found[0])
        vm.mapping.pop(found[0]["serial"], None)
        self.notify(vm.vm_id)
        return True

    def _plug(self, vm: FakeVm, drive: dict[str, Any]) -> dict[str, Any]:
        self._slot += 1
        device = {
            "deviceId": drive.get("deviceId"),
            "diskId": drive["diskId"],
            "serial": drive.get("serial") or drive["diskId"][:20],
            "iface": drive.get("iface", "virtio"),
            "address": f"0000:00:{self._slot:02x}.0",
            "plugged": True,
            "type": "disk",
        }
        vm.devices.append(device)
        if self.auto_guest:
            used = {e["name"] for e in vm.mapping.values()}
            free = next(f"/dev/vd{c}" for c in string.ascii_lowercase if f"/dev/vd{c}" not in used)
            vm.mapping[device["serial"]] = {"name": free}
        return device
