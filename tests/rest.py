"""A small REST client for end-to-end tests (real HTTP over loopback)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from .conftest import wait_until


class Rest:
    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.http.request(method, path, json=body) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, data

    async def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        got, data = await self.call(method, path, body)
        assert got == status, (method, path, got, data)
        return data

    async def first_vm(self) -> str:
        vms = (await self.ok("GET", "/api/vms"))["vm"]
        assert vms, "no VMs seeded"
        return str(vms[0]["id"])

    async def attachment(self, vm: str, disk: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.ok("GET", f"/api/vms/{vm}/diskattachments/{disk}")
        return data

    async def hotplug(self, vm: str, interface: str) -> str:
        body = {"interface": interface, "active": True}
        created = await self.ok("POST", f"/api/vms/{vm}/diskattachments", body, status=201)
        assert created["interface"] == interface
        return str(created["id"])

    async def wait_name(self, vm: str, disk: str, timeout: float = 5.0) -> tuple[str, float]:
        """Poll until the attachment has a logical name; return it and the wait."""
        start = asyncio.get_running_loop().time()

        async def named() -> str | None:
            found = await self.attachment(vm, disk)
            return found.get("logical_name")

        name = await wait_until(named, timeout=timeout, interval=0.02)
        return str(name), asyncio.get_running_loop().time() - start

    async def wait_unnamed(self, vm: str, disk: str, timeout: float = 5.0) -> float:
        start = asyncio.get_running_loop().time()

        async def unnamed() -> bool:
            return (await self.attachment(vm, disk)).get("logical_name") is None

        await wait_until(unnamed, timeout=timeout, interval=0.02)
        return asyncio.get_running_loop().time() - start
