"""The engine's side of host security: TLS against the engine CA, the host's token.

A real HostService with mutual TLS and/or a token, the engine's real monitor and
real PostgreSQL: the host's status in the database says whether the engine got
in (``up``) or why it would not trust the host (``untrusted`` + reason).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from diskname.config import ConfigError
from diskname.engine.config import EngineConfig
from diskname.engine.core.models import HostRow
from diskname.engine.db.store import Store
from diskname.engine.events import EventHub
from diskname.engine.hosts.connect import HostConnector, client_tls
from diskname.engine.hosts.monitor import HostMonitor
from diskname.engine.metrics import Metrics
from diskname.netaddr import is_loopback

from .conftest import running_host, wait_until
from .test_host_rpc_security import tls_host
from .tlsfiles import OPENSSL

pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


def pki_dir(pki: Path, into: Path, engine: str = "engine", ca: str = "ca") -> Path:
    """The files ``diskname pki init`` writes, taken from the openssl fixture."""
    into.mkdir(exist_ok=True)
    shutil.copy(pki / f"{ca}.crt", into / "ca.pem")
    shutil.copy(pki / f"{engine}.crt", into / "engine.pem")
    shutil.copy(pki / f"{engine}.key", into / "engine.key")
    return into


@contextlib.asynccontextmanager
async def monitored(
    pg_dsn: str, port: int, connector: HostConnector, token: str | None = None
) -> AsyncIterator[tuple[Store, HostRow]]:
    store = await Store.open(pg_dsn, Metrics())
    await store.migrate()
    host = await store.add_host(str(uuid.uuid4()), "h1", "127.0.0.1", port, token)
    monitor = HostMonitor(host, store, Metrics(), EventHub(), EngineConfig(), None, connector)
    monitor.grant()
    task = asyncio.create_task(monitor.run())
    try:
        yield store, host
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def status_of(store: Store, host: HostRow) -> tuple[str, str | None]:
    row = await store.get_host(host.id)
    assert row is not None
    return row.status, row.status_reason


async def wait_status(store: Store, host: HostRow, want: str) -> str | None:
    async def reached() -> bool:
        return (await status_of(store, host))[0] == want

    await wait_until(reached, timeout=15)
    return (await status_of(store, host))[1]


def tls_connector(pki: Path, into: Path, **kw: Any) -> HostConnector:
    return HostConnector(client_tls(pki_dir(pki, into, **kw)))


async def test_mutual_tls_and_the_token_bring_the_host_up(
    pki: Path, short_dir: Path, pg_dsn: str
) -> None:
    host_cfg = {"qemu_ga": False, "rpc_token": "t0k", **tls_host(pki)}
    async with (
        running_host(short_dir, **host_cfg) as host,
        monitored(pg_dsn, host.port, tls_connector(pki, short_dir / "pki"), "t0k") as (store, row),
    ):
        assert await wait_status(store, row, "up") is None
        assert row.to_json().get("token") is None  # the secret never leaves


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong CA", "certificate does not verify"),
        ("engine certificate from another CA", "does it trust the engine's certificate"),
        ("wrong token", "refused the engine's token"),
        ("no token", "wants a token"),
        ("host speaks plaintext", "TLS handshake failed"),
    ],
)
async def test_a_host_that_cannot_be_trusted_is_untrusted_with_the_reason(
    pki: Path, short_dir: Path, pg_dsn: str, case: str, reason: str
) -> None:
    host_cfg: dict[str, Any] = {"qemu_ga": False, "rpc_token": "t0k", **tls_host(pki)}
    engine_files: dict[str, str] = {}
    token: str | None = "t0k"
    if case == "wrong CA":
        engine_files = {"ca": "rogue-ca"}
    elif case == "engine certificate from another CA":
        engine_files = {"engine": "intruder"}
    elif case == "wrong token":
        token = "guess"
    elif case == "no token":
        token = None
    else:
        host_cfg = {"qemu_ga": False}
    connector = tls_connector(pki, short_dir / "pki", **engine_files)
    async with (
        running_host(short_dir, **host_cfg) as host,
        monitored(pg_dsn, host.port, connector, token) as (store, row),
    ):
        assert reason in (await wait_status(store, row, "untrusted") or "")


async def test_no_plaintext_to_a_host_off_loopback(pg_dsn: str) -> None:
    store = await Store.open(pg_dsn, Metrics())
    await store.migrate()
    host = await store.add_host(str(uuid.uuid4()), "far", "192.0.2.10", 54321)
    try:
        with pytest.raises(Exception, match="not loopback and the engine has no pki_dir"):
            await HostConnector().open(host, lambda note: None)
    finally:
        await store.close()
    assert is_loopback("127.0.0.2") and is_loopback("::1") and not is_loopback("hv01.lab")


def test_a_pki_dir_without_its_files_is_a_config_error(short_dir: Path) -> None:
    with pytest.raises(ConfigError, match="diskname pki init"):
        client_tls(short_dir)
