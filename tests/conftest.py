"""Shared fixtures: a real, throw-away PostgreSQL cluster for the whole session.

Each test that asks for ``pg_dsn`` gets a fresh database in that cluster, so
tests never see each other's rows and never mock the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from diskname.engine.db.store import Store
from diskname.engine.metrics import Metrics
from diskname.pgembed import EmbeddedPostgres
from diskname.runner import Service

from .tlsfiles import pki  # noqa: F401 - a fixture for every TLS test

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[str]:
    """DSN of the maintenance database of a session-wide embedded cluster."""
    # A short path: the server's UNIX socket lives in the data directory.
    with tempfile.TemporaryDirectory(prefix="dnpg") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "data")
        dsn = asyncio.run(pg.start())
        try:
            yield dsn
        finally:
            asyncio.run(pg.stop())


def _with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.asynccontextmanager
async def fresh_database(cluster_dsn: str, name: str) -> AsyncIterator[str]:
    """A DSN to a new, empty database ``name`` on the test cluster, dropped after the block."""
    admin = await asyncpg.connect(cluster_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield _with_database(cluster_dsn, name)
    finally:
        admin = await asyncpg.connect(cluster_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def pg_dsn(pg_cluster: str) -> AsyncIterator[str]:
    """A DSN to a brand-new, empty database, dropped after the test."""
    async with fresh_database(pg_cluster, f"t{next(_db_counter)}_{id(object())}") as dsn:
        yield dsn


async def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` (sync or async) until truthy or the deadline passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)  # sync-ok: polling with a deadline


@asynccontextmanager
async def in_background(service: Service) -> AsyncIterator[None]:
    """Run ``service`` while the block runs, without waiting for it to be ready."""
    task = asyncio.create_task(service.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@asynccontextmanager
async def started(service: Service, timeout: float = 30.0) -> AsyncIterator[None]:
    """Run ``service`` until the block ends; enter only once it says it is ready."""
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    waiter = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert ready.is_set(), f"{type(service).__name__} was not ready within {timeout}s"
        yield
    finally:
        waiter.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def store(pg_dsn: str) -> AsyncIterator[Store]:
    store = await Store.open(pg_dsn, Metrics())
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A temporary folder with a short path (UNIX socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="dn"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_host(root: Path, launcher: Any = None, **overrides: Any) -> AsyncIterator[Any]:
    """A real HostService under ``root`` (listen mode, port 0) while the block runs."""
    from diskname.host.service import HostConfig, HostService

    settings = {
        "listen_port": 0,
        "state_dir": root / "state",
        "channels_dir": root / "ch",
        "channel_mode": "listen",
        **overrides,
    }
    host = HostService(HostConfig(**settings), launcher)
    async with started(host):
        yield host
