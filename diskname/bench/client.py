"""The bench's view of the engine: REST calls, /metrics, and the event stream."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import orjson


class EngineClient:
    def __init__(self, base: str) -> None:
        self.base = base
        self.http = aiohttp.ClientSession(
            base_url=base,
            # A burst is fired at once (SPEC §9: "simultaneous"), not 64 at a time.
            connector=aiohttp.TCPConnector(limit=1100),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        # disk id -> loop time its (non-null) name was announced on /api/events
        self.named_at: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._events: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def close(self) -> None:
        if self._events is not None:
            self._events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._events
        await self.http.close()

    async def json(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        async with self.http.request(method, path, json=body) as resp:
            data = await resp.read()
            if resp.status != ok:
                raise RuntimeError(f"{method} {path}: {resp.status} {data[:300]!r}")
            return orjson.loads(data) if data else None

    async def healthy(self) -> bool:
        try:
            async with self.http.get("/healthz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def metrics(self) -> dict[str, float]:
        """Counter totals from /metrics (labelled series summed per name)."""
        async with self.http.get("/metrics") as resp:
            text = await resp.text()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                key = name.split("{", 1)[0]
                out[key] = out.get(key, 0.0) + float(value)
        return out

    # -- the event stream -------------------------------------------------------

    async def listen(self) -> None:
        self._events = asyncio.create_task(self._read_events())
        async with asyncio.timeout(30):
            await self._listening.wait()

    async def _read_events(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with self.http.get("/api/events", timeout=timeout) as resp:
            self._listening.set()
            async for raw in resp.content:
                if raw.startswith(b"data:"):
                    self._on_event(orjson.loads(raw[5:]))

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("new") is None:
            return
        now = asyncio.get_running_loop().time()
        disk = str(event["disk_id"])
        self.named_at.setdefault(disk, now)
        waiter = self._waiters.pop(disk, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(now)

    def expect(self, disk_id: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if disk_id in self.named_at:
            future.set_result(self.named_at[disk_id])
        else:
            self._waiters[disk_id] = future
        return future

    # -- REST operations ----------------------------------------------------------

    async def hotplug(self, vm_id: str) -> str:
        body = {"interface": "virtio", "active": True}
        att = await self.json("POST", f"/api/vms/{vm_id}/diskattachments", body, ok=201)
        return str(att["id"])

    async def name_of(self, vm_id: str, disk_id: str) -> str | None:
        att = await self.json("GET", f"/api/vms/{vm_id}/diskattachments/{disk_id}")
        name = att.get("logical_name")
        return None if name is None else str(name)
