"""A dev cluster (engine, hosts, simulated guests) in the test's event loop, on real sockets."""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from diskname.dev import DevCluster, DevConfig

from .conftest import started
from .rest import Rest


@dataclasses.dataclass
class Dev:
    rest: Rest
    cluster: DevCluster
    dsn: str

    async def vm(self) -> str:
        return await self.rest.first_vm()

    async def atts(self, vm: str) -> list[dict[str, Any]]:
        data = await self.rest.ok("GET", f"/api/vms/{vm}/diskattachments")
        return list(data["disk_attachment"])


@asynccontextmanager
async def dev(dsn: str, keepalive: float = 15.0, **overrides: Any) -> AsyncIterator[Dev]:
    state = Path(tempfile.mkdtemp(prefix="dnu"))
    settings: dict[str, Any] = {
        "hosts": 1,
        "vms": 1,
        "http_port": 0,
        "state_dir": state,
        "dsn": dsn,
    }
    cluster = DevCluster(DevConfig(**{**settings, **overrides}))
    # The keepalive is read per request, so the service's config can change before it starts.
    cluster.engine.config = dataclasses.replace(cluster.engine.config, events_keepalive=keepalive)
    try:
        async with started(cluster), aiohttp.ClientSession(base_url=cluster.base_url) as http:
            yield Dev(Rest(http), cluster, dsn)
    finally:
        shutil.rmtree(state, ignore_errors=True)
