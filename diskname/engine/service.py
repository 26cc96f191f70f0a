"""The engine service: database, host monitors and HTTP in one TaskGroup.

Start-up in order (database, migrations, monitors, HTTP), ``ready`` set once
the site really listens; on cancellation the reverse: stop HTTP, stop the
monitors, close the pool, stop the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from ..pgembed import EmbeddedPostgres
from .actions import Actions
from .api import EngineContext, make_app
from .config import EngineConfig
from .events import EventHub
from .metrics import Metrics
from .monitors import Monitors
from .store import Store

log = logging.getLogger(__name__)

HTTP_SHUTDOWN_TIMEOUT = 5.0


class EngineService:
    """``await EngineService(config).run(ready)``; cancel the task to stop it."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.dsn: str | None = config.dsn
        self.http_port: int | None = None
        self.metrics = Metrics()

    async def run(self, ready: asyncio.Event | None = None) -> None:
        async with self._database() as dsn, self._store(dsn) as store:
            hub = EventHub()
            monitors = Monitors(store, self.metrics, hub, self.config, dsn)
            actions = Actions(store, monitors, self.metrics, hub)
            ctx = EngineContext(self.config, store, monitors, self.metrics, hub, actions)
            async with asyncio.TaskGroup() as tg:
                await monitors.start(tg)
                try:
                    async with self._http(make_app(ctx)):
                        if ready is not None:
                            ready.set()
                        await asyncio.Event().wait()  # until cancelled
                finally:
                    await monitors.stop()
                    log.info("engine stopping: host monitors stopped")

    @contextlib.asynccontextmanager
    async def _database(self) -> AsyncIterator[str]:
        if self.config.dsn is not None:
            yield self.config.dsn
            return
        pg = EmbeddedPostgres(self.config.state_dir / "pg")
        self.dsn = await pg.start()
        try:
            yield self.dsn
        finally:
            await pg.stop()

    @contextlib.asynccontextmanager
    async def _store(self, dsn: str) -> AsyncIterator[Store]:
        store = await Store.open(dsn, self.metrics)
        try:
            applied = await store.migrate()
            if applied:
                log.info("applied migrations %s", ", ".join(applied))
            yield store
        finally:
            await store.close()
            log.info("engine stopping: database pool closed")

    @contextlib.asynccontextmanager
    async def _http(self, app: web.Application) -> AsyncIterator[None]:
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.http_host, self.config.http_port)
            await site.start()
            self.http_port = _bound_port(runner)
            log.info("engine serving on http://%s:%s", self.config.http_host, self.http_port)
            yield
        finally:
            # Stop accepting, end the event streams, let requests finish within
            # the shutdown timeout, cancel what is left.
            await runner.cleanup()
            log.info("engine stopping: HTTP closed")


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the HTTP site is not bound")
