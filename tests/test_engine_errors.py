"""The engine's errors carry no HTTP status; each edge's table gives one, by class.

And the database's errors reach the rest of the engine only as the engine's own,
translated once in ``db/pool.py`` (here against a real PostgreSQL and a real
closed port).
"""

from __future__ import annotations

import asyncio
import inspect
import socket

import asyncpg
import pytest

from diskname.engine import errors
from diskname.engine.db.pool import Pool, translated
from diskname.engine.errors import (
    DatabaseRefused,
    DatabaseTimeout,
    DeviceNotOnVm,
    EngineError,
    HostRefused,
    HostStateRefused,
    HypervisorFailed,
    MissingReference,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    VmNotOnHost,
)
from diskname.engine.http.errors import REST
from diskname.engine.ovirt import FAULTS
from diskname.engine.ovirt.sso import OAUTH, UnsupportedGrant
from diskname.protocol.host_wire import Code

from .conftest import wait_until

FAMILY = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, EngineError)]


def test_no_error_of_the_domain_knows_a_status() -> None:
    for cls in FAMILY:
        assert not hasattr(cls, "status"), cls
        assert not hasattr(cls("x"), "status"), cls


def test_every_error_has_a_status_at_each_edge() -> None:
    for cls in FAMILY:
        assert 400 <= REST[cls("x")].status <= 599
        assert FAULTS[cls("x")].status == REST[cls("x")].status


def test_a_missing_path_resource_and_a_missing_reference_differ_by_class() -> None:
    assert REST[NotFound("no VM")].status == 404
    assert REST[MissingReference("host.id: no such host")].status == 422


def test_host_refusals_by_class_and_a_later_subclass_answers_as_its_parent() -> None:
    assert issubclass(VmNotOnHost, HostStateRefused)
    assert REST[HostStateRefused("m")].status == 409
    assert REST[DeviceNotOnVm("m", Code.UNKNOWN_DEVICE)].status == 409
    assert REST[HypervisorFailed("m", Code.HYPERVISOR_ERROR)].status == 502

    class QemuRefused(HostRefused):  # as another helper may add, with no table line yet
        pass

    assert REST[QemuRefused("m", -32003)].status == 502
    assert REST.extended({QemuRefused: REST[NotFound("x")]})[QemuRefused("m")].status == 404


def test_headers_come_with_the_status() -> None:
    unauthenticated = REST[Unauthenticated("sign in")]
    assert unauthenticated.headers_for(Unauthenticated("x"))["WWW-Authenticate"].startswith(
        "Bearer"
    )
    slow = TooManyRequests("wait", retry_after=1.2)
    assert REST[slow].headers_for(slow) == {"Retry-After": "2"}


def test_oauth_answers_in_its_own_shape_and_leaves_a_lost_database_to_the_api() -> None:
    assert OAUTH[UnsupportedGrant("x")] is not None
    assert OAUTH[Unauthenticated("x")] == OAUTH[Unauthenticated("y")]
    answer = OAUTH[Unauthenticated("x")]
    assert answer is not None and (answer.status, answer.error) == (400, "access_denied")
    assert OAUTH[Unavailable("x")] is None and OAUTH[DatabaseTimeout("x")] is None


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (ConnectionResetError("reset"), Unavailable),
        (asyncpg.ConnectionDoesNotExistError("closed"), Unavailable),
        (asyncpg.CannotConnectNowError("starting up"), Unavailable),
        (asyncpg.AdminShutdownError("shutdown"), Unavailable),
        (TimeoutError(), DatabaseTimeout),
        (asyncpg.DataError("bad"), DatabaseRefused),
    ],
)
def test_library_errors_are_translated_once(raised: Exception, expected: type) -> None:
    with pytest.raises(expected) as caught, translated():
        raise raised
    assert caught.value.__cause__ is raised
    assert type(caught.value) is expected


def test_the_engines_own_errors_pass_untouched() -> None:
    with pytest.raises(NotFound), translated():
        raise NotFound("no VM")


async def test_a_database_nobody_listens_on_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(Unavailable):
            await Pool.open(f"postgresql://nobody@127.0.0.1:{port}/none")


async def test_a_refused_statement_and_a_lost_connection_through_the_pool(pg_dsn: str) -> None:
    pool = await Pool.open(pg_dsn, max_size=1)
    killer = await asyncpg.connect(pg_dsn)
    try:
        with pytest.raises(DatabaseRefused):
            await pool.fetchval("SELECT 1/0")
        running = asyncio.ensure_future(pool.fetchval("SELECT pg_sleep(30) -- victim"))
        find = "SELECT pid FROM pg_stat_activity WHERE query LIKE '%-- victim' AND pid <> $1"
        victim = await wait_until(lambda: killer.fetchval(find, killer.get_server_pid()))
        await killer.execute("SELECT pg_terminate_backend($1)", victim)
        with pytest.raises(Unavailable):
            await running
        assert await pool.fetchval("SELECT 1") == 1  # the pool opens a new connection
    finally:
        await killer.close()
        await pool.close()


def test_a_connection_left_half_way_through_a_reply_is_unavailable_not_a_crash() -> None:
    """asyncpg refuses a statement on a connection whose server vanished mid-reply (a
    failover); that is the database being away, retried, never an engine crash."""
    with pytest.raises(Unavailable), translated():
        raise asyncpg.exceptions.InternalClientError("another operation is in progress")
