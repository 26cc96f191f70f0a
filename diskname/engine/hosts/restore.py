"""Give a host back the VMs it lost (SPEC §19 "Crashes").

A host whose state file was corrupt (moved aside) or lost comes back without VMs
the engine has on it (:mod:`..core.sync.missing` finds them). The engine holds
their definitions: each is created again on the host (``VM.create``, as
:mod:`..actions.vms` creates a VM) with the disks the engine has plugged into it,
under the VM's action lock; the host's report that follows stores the rest
(devices, the guest's names). A host that refuses (a libvirt host defines its VMs
itself) is logged and left as it is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..core.models import Attachment
from ..db.store import Store
from ..errors import EngineError
from .monitor import HostMonitor

log = logging.getLogger(__name__)

AT_ONCE = 16  # VM.create calls in flight to one host (it writes their state files together)


def device(att: Attachment) -> dict[str, Any]:
    """An attachment as a device of ``VM.create`` (as the engine first created it)."""
    serial = att.disk.serial if att.disk is not None else None
    found = {"diskId": att.disk_id, "deviceId": att.device_id, "iface": att.interface}
    return found | ({"serial": serial} if serial else {}) | {"type": "disk"}


async def restore_vms(store: Store, monitor: HostMonitor, vm_ids: Sequence[str]) -> int:
    """Create each VM again on the monitor's host; how many the host took."""
    limit = asyncio.Semaphore(AT_ONCE)

    async def one(vm_id: str) -> bool:
        async with limit:
            return await _restore(store, monitor, vm_id)

    done = sum(await asyncio.gather(*(one(v) for v in vm_ids)))
    log.warning(
        "host %s did not know %d VM(s) it has in the engine: %d given back",
        monitor.host.name,
        len(vm_ids),
        done,
    )
    return done


async def _restore(store: Store, monitor: HostMonitor, vm_id: str) -> bool:
    async with monitor.vm_action(vm_id):
        vm = await store.get_vm(vm_id)  # under the lock: a VM removed meanwhile stays so
        if vm is None or vm.host_id != monitor.host.id:
            return False
        plugged = [a for a in await store.attachments_of([vm_id]) if a.active]
        # In the order the host gave them addresses (it allocates in plug order): the
        # VM enumerates its disks as before, so its guest names them as before.
        plugged.sort(key=lambda a: (a.address is None, a.address or "", a.disk_id))
        devices = [device(a) for a in plugged]
        params = {"vmId": vm_id, "name": vm.name, "devices": devices}
        try:
            await monitor.call("VM.create", params)
        except EngineError as exc:
            log.warning("host %s: VM %s not given back: %s", monitor.host.name, vm_id, exc)
            return False
    return True
