"""The engine service: database, host monitors and HTTP in one TaskGroup.

Start-up in order (database, migrations, monitors, HTTP), ``ready`` set once
the site really listens; on cancellation the reverse: stop HTTP, stop the
monitors, close the pool, stop the embedded PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from ..binding import ensure_free, translated
from ..config import ConfigError
from ..connguard import GuardLimits
from ..netaddr import is_loopback
from ..pgembed import EmbeddedPostgres
from .actions import Actions
from .config import EngineConfig
from .db.store import Store
from .db.users import UserStore
from .events import EventHub
from .hosts.fleet import Monitors
from .http.app import EngineContext, make_app
from .http.auth import Authenticator, check_exposure
from .http.site import GuardedSite
from .metrics import Metrics

log = logging.getLogger(__name__)

HTTP_SHUTDOWN_TIMEOUT = 5.0
UsersSetup = Callable[[UserStore], Awaitable[None]]
# Connections waiting to be accepted: a burst of clients connecting at once is
# queued, not dropped (aiohttp's default of 128 made the rest retry a second later).
HTTP_BACKLOG = 1024


# The collector's first threshold: the container objects allocated between two
# young-generation collections. At the default (700) a host's reply in flight is
# collected young a few times over and pushed into the oldest generation, whose
# full collections then walk every long-lived object: 0.1-0.4 s at 100,000 VMs,
# in the middle of somebody's hot-plug (docs/performance.md).
GC_YOUNG = 5_000


def tune_gc() -> None:
    """Keep the garbage collector out of the engine's latency.

    What exists once the engine has started (modules, classes, functions) lives as
    long as the process: frozen, it is never walked again. A larger young
    generation lets the objects of one request die young, so that full collections
    come seldom and find little.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


class EngineService:
    """``await EngineService(config).run(ready)``; cancel the task to stop it.

    ``users_setup`` runs once the database is migrated, before the engine checks
    that it is not serving a network unprotected (dev mode creates its admin there).
    """

    def __init__(self, config: EngineConfig, users_setup: UsersSetup | None = None) -> None:
        self.config = config
        self.dsn: str | None = config.dsn
        self.http_port: int | None = None
        self.metrics = Metrics()
        self._https = https_context(config)
        self._limits = http_limits(config)
        self._users_setup = users_setup

    async def run(self, ready: asyncio.Event | None = None) -> None:
        http = self.config.http_host, self.config.http_port
        ensure_free("the REST API", *http, setting="http_port")
        async with self._database() as dsn, self._store(dsn) as store:
            authenticator = await self._authenticator(store)
            hub = EventHub()
            monitors = Monitors(store, self.metrics, hub, self.config, dsn)
            actions = Actions(store, monitors, self.metrics, hub)
            ctx = EngineContext(
                self.config, store, monitors, self.metrics, hub, actions, authenticator
            )
            async with asyncio.TaskGroup() as tg:
                await monitors.start(tg)
                # Disks a killed engine left locked: resumed as the balancing rounds find them.
                tg.create_task(actions.resume_images(), name="image-recovery")
                try:
                    async with self._http(make_app(ctx)):
                        if ready is not None:
                            ready.set()
                        await asyncio.Event().wait()  # until cancelled
                finally:
                    await monitors.stop()
                    log.info("engine stopping: host monitors stopped")

    async def _authenticator(self, store: Store) -> Authenticator:
        users = UserStore(store.pool)
        if self._users_setup is not None:
            await self._users_setup(users)
        check_exposure(self.config, await users.any())
        if self._https is None and not is_loopback(self.config.http_host):
            log.warning(
                "serving the REST API on %s without HTTPS: passwords and tokens cross the "
                "network in clear text (set https_cert and https_key)",
                self.config.http_host,
            )
        return Authenticator(self.config, users, self.metrics)

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
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
            keepalive_timeout=self.config.idle_timeout,
        )
        await runner.setup()
        try:
            http = self.config.http_host, self.config.http_port
            site = GuardedSite(
                runner, *http, self._limits, ssl_context=self._https, backlog=HTTP_BACKLOG
            )
            with translated("the REST API", *http, setting="http_port"):
                await site.start()
            self.http_port = _bound_port(runner)
            scheme = "https" if self._https else "http"
            log.info("engine serving on %s://%s:%s", scheme, self.config.http_host, self.http_port)
            yield
        finally:
            # Stop accepting, end the event streams, let requests finish within
            # the shutdown timeout, cancel what is left.
            await runner.cleanup()
            log.info("engine stopping: HTTP closed")


def http_limits(config: EngineConfig) -> GuardLimits:
    """SPEC §19's guard on the HTTP port; aiohttp closes idle keep-alives itself
    (a byte-silence rule would cut event streams and long polls)."""
    if config.idle_timeout <= 0:
        raise ConfigError("idle_timeout must be positive")
    return GuardLimits(
        config.max_connections, config.max_connections_per_address, config.head_timeout
    )


def _bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    raise RuntimeError("the HTTP site is not bound")


def https_context(config: EngineConfig) -> ssl.SSLContext | None:
    """TLS for the REST API and the page, from ``https_cert``/``https_key`` (None: HTTP)."""
    cert, key = config.https_cert, config.https_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigError("HTTPS needs both https_cert and https_key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load https_cert {cert} and https_key {key}: {exc}") from None
    return context
