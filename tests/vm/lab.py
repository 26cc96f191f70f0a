"""What the libvirt lab modules share: a database, registered hosts, domain specs, skips.

tests/test_libvirt_vm.py and tests/test_libvirt_pool_vm.py each start an
engine and a ``host --hypervisor libvirt`` as processes beside the system
libvirtd and boot the cached Debian guest as libvirt domains; these are the
parts both need, so neither module grows past a readable size.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from diskname.bench.procs import Child
from diskname.streams import ConnectionLost, JsonRpcClient

from ..conftest import fresh_database, wait_until
from ..rest import Rest
from . import libvirt as lv
from .image import Image, cache_root, missing_tools, recipe_hash


def skip_reason() -> str | None:
    """Why a real-libvirt guest cannot boot here (no image and no root, no QEMU, no libvirtd)."""
    if not Image(cache_root() / recipe_hash()).exists() and os.geteuid() != 0:
        return "building the guest image (debootstrap) needs root"
    needed = missing_tools() if not Image(cache_root() / recipe_hash()).exists() else []
    needed += [t for t in missing_tools() if t.startswith("qemu") and t not in needed]
    if needed:
        return f"missing {', '.join(needed)} (apt: qemu-system-x86 qemu-utils debootstrap)"
    return lv.skip_reason()


def database(cluster_dsn: str) -> contextlib.AbstractAsyncContextManager[str]:
    """A fresh database on the test cluster for the block, dropped after."""
    return fresh_database(cluster_dsn, f"libvirt_{uuid.uuid4().hex[:12]}")


async def register(rest: Rest, name: str, port: int) -> str:
    """The engine id of the host listening on ``port``, once the engine took it."""

    async def registered() -> dict[str, Any] | None:
        status, data = await rest.call(
            "POST", "/api/hosts", {"name": name, "address": "127.0.0.1", "port": port}
        )
        return data if status == 201 else None

    return str((await wait_until(registered, timeout=30, interval=0.2))["id"])


async def healthy(rest: Rest) -> bool:
    try:
        return (await rest.call("GET", "/healthz"))[0] == 200
    except aiohttp.ClientError:
        return False


async def stop_all(children: list[Child]) -> None:
    """Stop every child; each must exit 0."""
    codes = [await child.stop() for child in children]
    assert codes == [0] * len(children), codes


def domain_spec(tmp: Path, name: str, *, agent: bool) -> lv.DomainSpec:
    """A domain of the cached image with its own work folder under ``tmp``."""
    work = tmp / name
    work.mkdir()
    serial = uuid.uuid4().hex[:20]
    return lv.DomainSpec(str(uuid.uuid4()), f"dn-{name}-{serial[:6]}", serial, work, agent=agent)


async def rpc(port: int) -> JsonRpcClient | None:
    """A JSON-RPC client of the host on ``port``, or None while it is not listening."""
    try:
        return await JsonRpcClient.connect("127.0.0.1", port)
    except ConnectionLost:
        return None


async def attachments(rest: Rest, vm: str) -> list[dict[str, Any]]:
    status, data = await rest.call("GET", f"/api/vms/{vm}/diskattachments")
    return list(data["disk_attachment"]) if status == 200 else []


async def root_named(rest: Rest, vm: str, timeout: float) -> str:
    """The guest's name of the VM's first named disk (its root, once it booted)."""

    async def named() -> str | None:
        found = await attachments(rest, vm)
        return next((a["logical_name"] for a in found if a.get("logical_name")), None)

    return str(await wait_until(named, timeout=timeout, interval=0.2))
