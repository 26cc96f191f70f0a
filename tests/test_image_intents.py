"""Image intents against a real PostgreSQL (SPEC §18, §19): a creation is left only
once its engine's lease connection is gone; one engine claims it; settling tells a
disk deleted meanwhile (whose image is then removed again); a failed creation is
illegal, let go or kept as its failure says; a legacy locked disk is resumed after
the migration. The host is a stand-in recording calls: the host's side of a
creation is tested on real hosts in test_image_crash_recovery."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from diskname.engine.actions.images import Images
from diskname.engine.core.models import Attachment, DiskSpec, VmRow
from diskname.engine.db.images import ImageIntents
from diskname.engine.db.intents import ENGINE_APPLICATION
from diskname.engine.db.migrate import migration_files
from diskname.engine.db.storage import StorageTables
from diskname.engine.db.store import Store
from diskname.engine.errors import HostNotConnected, HostRefused, HostTimeout
from diskname.protocol.disks import disk_serial
from diskname.protocol.storage_wire import ImageRequest, StorageDomainInfo

pytestmark = pytest.mark.timeout(30)
GIB = 1 << 30


async def engine_connection(dsn: str) -> Any:
    """A connection as an engine's lease connection looks to others."""
    return await asyncpg.connect(dsn, server_settings={"application_name": ENGINE_APPLICATION})


async def floating_disk(store: Store, pid: int | None) -> tuple[StorageTables, str]:
    host_id = str(uuid.uuid4())
    await store.add_host(host_id, "h0", "127.0.0.1", 1)
    tables = StorageTables(store.pool, store.metrics)
    await tables.store_domains(host_id, [StorageDomainInfo("data", "memory", 4 * GIB, 0)])
    (domain,) = await tables.domains_named("data")
    disk_id = str(uuid.uuid4())
    spec = DiskSpec(name="f", provisioned_size=GIB)
    await tables.add_floating_disk(disk_id, "s" + disk_id[:8], spec, domain.id, pid)
    return tables, disk_id


async def test_a_creation_is_left_once_its_engine_is_gone_and_claimed_once(
    store: Store, pg_dsn: str
) -> None:
    creator = await engine_connection(pg_dsn)
    intents = ImageIntents(store.pool, store.metrics)
    _, disk_id = await floating_disk(store, creator.get_server_pid())
    assert await intents.left() == []  # its engine is alive: in flight, untouched
    assert not await intents.claim(disk_id, 1)
    await creator.close()
    (left,) = await intents.left()
    assert (left.disk_id, left.status, left.domain, left.size) == (disk_id, "locked", "data", GIB)

    resumer = await engine_connection(pg_dsn)
    try:
        assert await intents.claim(disk_id, resumer.get_server_pid())
        assert not await intents.claim(disk_id, 2)  # a second engine finds it taken
        assert await intents.left() == []
        await intents.release(disk_id, resumer.get_server_pid())  # the host went away
        assert [x.disk_id for x in await intents.left()] == [disk_id]
        assert await intents.claim(disk_id, resumer.get_server_pid())
        settled = await intents.settle(disk_id, "ok")
        assert settled.present and settled.changed
        again = await intents.settle(disk_id, "illegal", "late")  # the first outcome wins
        assert again.present and not again.changed
    finally:
        await resumer.close()
    sql = "SELECT status, status_reason FROM disks WHERE id = $1"
    row = await store.pool.fetchrow(sql, disk_id)
    assert (row["status"], row["status_reason"]) == ("ok", None)
    assert await store.pool.fetchval("SELECT count(*) FROM image_intents") == 0


async def test_settling_a_disk_deleted_meanwhile_says_so(store: Store) -> None:
    intents = ImageIntents(store.pool, store.metrics)
    _, disk_id = await floating_disk(store, None)
    await store.pool.execute("UPDATE disks SET status = 'ok' WHERE id = $1", disk_id)
    assert await store.remove_disk(disk_id)  # its intent goes with it
    assert await store.pool.fetchval("SELECT count(*) FROM image_intents") == 0
    settled = await intents.settle(disk_id, "ok")
    assert not settled.present and not settled.changed


async def test_a_disk_locked_before_the_migration_is_left_at_once(pg_dsn: str) -> None:
    """An engine of before 0011 left a floating disk locked: the migration makes it an
    intent nobody holds, so the host's owner resumes it."""
    conn = await asyncpg.connect(pg_dsn)
    try:
        files = dict(migration_files())
        for version, sql in files.items():
            if version < "0011":
                await conn.execute(sql)
        host_id, disk_id = str(uuid.uuid4()), str(uuid.uuid4())
        hosts = "INSERT INTO hosts (id, name, address, port) VALUES ($1, 'h', 'a', 1)"
        await conn.execute(hosts, host_id)
        await conn.execute(
            "INSERT INTO disks (id, serial, name, provisioned_size, status)"
            " VALUES ($1, 'serial1', 'f', $2, 'locked')",
            disk_id,
            GIB,
        )
        await conn.execute(files["0011_image_intents"])
        rows = await conn.fetch("SELECT disk_id::text, engine_pid FROM image_intents")
        assert [(r["disk_id"], r["engine_pid"]) for r in rows] == [(disk_id, None)]
    finally:
        await conn.close()


class FakeHost:
    """Stands in for a host's monitor: records the engine's calls, fails with ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.error = error

    async def call(self, method: str, params: Any = None) -> bool:
        self.calls.append(method)
        if self.error is not None and method == "Image.create":
            raise self.error
        return True


class NoLease:
    engine_pid = None


def request(disk_id: str) -> ImageRequest:
    return ImageRequest("data", disk_id, GIB)


async def test_an_image_made_for_a_disk_deleted_meanwhile_is_removed_again(store: Store) -> None:
    """Another engine settled the disk and it was deleted while this one made its image."""
    images = Images(ImageIntents(store.pool, store.metrics), NoLease())  # type: ignore[arg-type]
    _, disk_id = await floating_disk(store, None)
    await store.pool.execute("UPDATE disks SET status = 'ok' WHERE id = $1", disk_id)
    assert await store.remove_disk(disk_id)
    host = FakeHost()
    await images.make(host, request(disk_id), None)
    assert host.calls == ["Image.create", "Image.delete"]


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (HostRefused("host h0 refused Image.create: no room"), ("illegal", 0)),
        (HostNotConnected("host h0 is not connected"), ("locked", 1)),  # let go: pid NULL
        (HostTimeout("host h0: no answer"), ("locked", 1)),  # kept: the host may finish
    ],
)
async def test_a_failed_creation_settles_lets_go_or_keeps_its_intent(
    store: Store, error: Exception, expected: tuple[str, int]
) -> None:
    images = Images(ImageIntents(store.pool, store.metrics), NoLease())  # type: ignore[arg-type]
    _, disk_id = await floating_disk(store, 4242)
    await images.make(FakeHost(error), request(disk_id), 4242)
    row = await store.pool.fetchrow(
        """SELECT d.status, d.status_reason, count(i.disk_id) AS intents, min(i.engine_pid) AS pid
           FROM disks d LEFT JOIN image_intents i ON i.disk_id = d.id
           WHERE d.id = $1 GROUP BY d.id""",
        disk_id,
    )
    assert (row["status"], row["intents"]) == expected
    if expected[0] == "illegal":
        assert row["status_reason"] == str(error)
    elif isinstance(error, HostNotConnected):
        assert row["pid"] is None  # resumed by the host's owner once it is connected
    else:
        assert row["pid"] == 4242


async def test_the_balancing_round_reads_hosts_and_what_gone_engines_left_in_one_statement(
    store: Store, pg_dsn: str
) -> None:
    """``Store.balancing_round``: the hosts, the VMs whose plug intent's engine is gone,
    whether an image creation is left; and with no host at all, still the last."""
    empty = await store.balancing_round()
    assert (empty.hosts, empty.stale, empty.images_left) == ([], [], False)

    creator = await engine_connection(pg_dsn)
    await floating_disk(store, creator.get_server_pid())
    (host,) = (await store.balancing_round()).hosts
    vm_id, root = str(uuid.uuid4()), str(uuid.uuid4())
    att = Attachment(vm_id, root, str(uuid.uuid4()), "virtio", False, None, None, None, None)
    row = VmRow(vm_id, "vm", "Up", host.id)
    await store.create_vm(row, att, disk_serial(root), DiskSpec("root"), creator.get_server_pid())
    alive = await store.balancing_round()
    assert ([h.name for h in alive.hosts], alive.stale, alive.images_left) == (["h0"], [], False)

    await creator.close()  # the engine of both intents dies
    gone = await store.balancing_round()
    assert (gone.stale, gone.images_left) == ([(host.id, vm_id)], True)
    await store.delete_vm(vm_id)
    await store.pool.execute("DELETE FROM hosts")
    alone = await store.balancing_round()  # no host left: the creation still shows
    assert (alone.hosts, alone.stale, alone.images_left) == ([], [], True)
