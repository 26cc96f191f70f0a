"""The engine's database: migrations and the one-transaction VM update, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from diskname.engine.core.matching import match_names
from diskname.engine.core.models import GuestAgent, HostDevice, VmReport
from diskname.engine.core.sync.freshness import AgentChange
from diskname.engine.db.catalog import Catalog
from diskname.engine.db.migrate import apply_migrations
from diskname.engine.db.reports import (
    HISTORY_PER_DISK,
    Fence,
    HostReports,
    LeaseLost,
    Stored,
    apply_many,
)
from diskname.engine.db.store import Store
from diskname.engine.errors import Conflict, DatabaseRefused
from diskname.engine.hosts.leases import LOCK_CLASS
from diskname.engine.metrics import Metrics
from diskname.protocol.disks import disk_serial

from .conftest import wait_until

VM = "0b6ec2a1-3c55-4d1e-9a0e-6f4f8d2c1b00"
DISK = "1a2b3c4d-5e6f-4a8b-9c0d-112233445566"
DEVICE = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"


async def _host(store: Store) -> str:
    host_id = str(uuid.uuid4())
    await store.add_host(host_id, f"h-{host_id[:8]}", "127.0.0.1", 4000)
    return host_id


def _report(mapping: dict[str, Any], *, plugged: bool = True, vm_hash: str = "h1") -> VmReport:
    devices = (HostDevice(DISK, DEVICE, disk_serial(DISK), "virtio", "0000:00:07.0"),)
    return VmReport(VM, "up", vm_hash, "vm1", devices if plugged else (), mapping)


async def _apply(store: Store, host_id: str, report: VmReport) -> list[Any]:
    match = match_names([d.as_vm_disk() for d in report.devices], report.mapping)
    return (await store.apply_reports(host_id, [(report, match)])).changes


async def _history(store: Store, vm_id: str, disk_id: str) -> list[tuple[str | None, str | None]]:
    """The disk's name changes in the VM, oldest first, as (old, new)."""
    changes = await Catalog(store.pool, store.metrics).history(vm_id, disk_id, 1000)
    return [(c.old, c.new) for c in reversed(changes)]


async def test_migrations_are_idempotent(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        applied = await apply_migrations(conn)
        assert applied[0] == "0001_init" and applied == sorted(applied)
        assert await apply_migrations(conn) == []
        versions = await conn.fetch("SELECT version FROM schema_migrations")
        compat = await conn.fetchval("SELECT compatibility_version FROM clusters")
        width = await conn.fetchval(
            """SELECT character_maximum_length FROM information_schema.columns
               WHERE table_name = 'vm_device' AND column_name = 'logical_name'"""
        )
    finally:
        await conn.close()
    assert sorted(r["version"] for r in versions) == applied
    assert compat == "4.7"
    assert width == 255


async def test_update_writes_names_history_and_hash(store: Store) -> None:
    host_id = await _host(store)
    changes = await _apply(store, host_id, _report({disk_serial(DISK): {"name": "/dev/vdb"}}))
    assert [(c.disk_id, c.old, c.new) for c in changes] == [(DISK, None, "/dev/vdb")]
    att = await store.get_attachment(VM, DISK)
    assert att is not None and att.active and att.logical_name == "/dev/vdb"
    assert att.logical_name_source == "serial" and att.logical_name_seen_at is not None
    assert att.address == "0000:00:07.0"
    assert await _history(store, VM, DISK) == [(None, "/dev/vdb")]
    assert (await store.vm_states(host_id))[VM] == ("h1", "up", ("none", ()))


async def test_same_data_twice_writes_nothing_and_no_second_history(store: Store) -> None:
    host_id = await _host(store)
    report = _report({disk_serial(DISK): {"name": "/dev/vdb"}})
    await _apply(store, host_id, report)
    writes = store.metrics.db_writes
    assert await _apply(store, host_id, report) == []
    assert store.metrics.db_writes == writes
    assert await _history(store, VM, DISK) == [(None, "/dev/vdb")]


async def test_rename_and_unplug_are_recorded(store: Store) -> None:
    host_id = await _host(store)
    await _apply(store, host_id, _report({disk_serial(DISK): {"name": "/dev/vdb"}}))
    await _apply(store, host_id, _report({disk_serial(DISK): {"name": "/dev/vdc"}}, vm_hash="h2"))
    await _apply(store, host_id, _report({}, plugged=False, vm_hash="h3"))
    att = await store.get_attachment(VM, DISK)
    assert att is not None and not att.active and att.logical_name is None
    assert await _history(store, VM, DISK) == [
        (None, "/dev/vdb"),
        ("/dev/vdb", "/dev/vdc"),
        ("/dev/vdc", None),
    ]


async def test_hash_is_stored_after_names(store: Store, pg_dsn: str) -> None:
    host_id = await _host(store)
    conn = await asyncpg.connect(pg_dsn)
    try:
        # Record, at the moment the hash is written, what the transaction already wrote.
        await conn.execute(
            """CREATE TABLE probe (named int, history int);
               CREATE FUNCTION probe_fn() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 INSERT INTO probe SELECT
                   (SELECT count(*) FROM vm_device WHERE vm_id = NEW.id
                      AND logical_name IS NOT NULL),
                   (SELECT count(*) FROM logical_name_history WHERE vm_id = NEW.id);
                 RETURN NEW;
               END $$;
               CREATE TRIGGER probe_t BEFORE UPDATE OF hash ON vms
                 FOR EACH ROW WHEN (NEW.hash IS NOT NULL) EXECUTE FUNCTION probe_fn();"""
        )
        await _apply(store, host_id, _report({disk_serial(DISK): {"name": "/dev/vdb"}}))
        probes = await conn.fetch("SELECT named, history FROM probe")
    finally:
        await conn.close()
    assert [(r["named"], r["history"]) for r in probes] == [(1, 1)]


async def test_failed_update_keeps_the_old_hash(store: Store, pg_dsn: str) -> None:
    host_id = await _host(store)
    await _apply(store, host_id, _report({}))
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(
            """CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION 'boom'; END $$;
               CREATE TRIGGER boom_t BEFORE INSERT ON logical_name_history
                 FOR EACH ROW EXECUTE FUNCTION boom();"""
        )
    finally:
        await conn.close()
    with pytest.raises(DatabaseRefused):
        await _apply(
            store, host_id, _report({disk_serial(DISK): {"name": "/dev/vdb"}}, vm_hash="h2")
        )
    att = await store.get_attachment(VM, DISK)
    assert att is not None and att.logical_name is None
    assert (await store.vm_states(host_id))[VM][0] == "h1"


async def test_old_cluster_keeps_no_names(store: Store, pg_dsn: str) -> None:
    host_id = await _host(store)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE clusters SET compatibility_version = '3.4'")
    finally:
        await conn.close()
    changes = await _apply(store, host_id, _report({disk_serial(DISK): {"name": "/dev/vdb"}}))
    att = await store.get_attachment(VM, DISK)
    assert changes == [] and att is not None and att.active and att.logical_name is None


async def test_unplug_by_the_engine_clears_the_name_and_forgets_the_hash(store: Store) -> None:
    host_id = await _host(store)
    await _apply(store, host_id, _report({disk_serial(DISK): {"name": "/dev/vdb"}}))
    change = await store.mark_unplugged(VM, DISK)
    assert change is not None and (change.old, change.new) == ("/dev/vdb", None)
    att = await store.get_attachment(VM, DISK)
    assert att is not None and not att.active and att.logical_name is None
    assert (await store.vm_states(host_id))[VM][0] is None
    assert await _history(store, VM, DISK) == [(None, "/dev/vdb"), ("/dev/vdb", None)]


async def test_duplicate_host_name_is_a_conflict(store: Store) -> None:
    await store.add_host(str(uuid.uuid4()), "same", "127.0.0.1", 1)
    with pytest.raises(Conflict):
        await store.add_host(str(uuid.uuid4()), "same", "127.0.0.1", 2)


def _id(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_OID, "/".join(map(str, parts))))


def _fleet(vms: int, disks: int, vm_hash: str, first: int = 0) -> list[tuple[VmReport, Any]]:
    """``vms`` VMs of ``disks`` named disks each, ids derived from their position."""
    items = []
    for v in range(first, first + vms):
        devices = tuple(
            HostDevice(
                _id("disk", v, d), _id("dev", v, d), disk_serial(_id("disk", v, d)), "virtio", None
            )
            for d in range(disks)
        )
        mapping = {dev.serial: {"name": f"/dev/vd{chr(98 + i)}"} for i, dev in enumerate(devices)}
        report = VmReport(_id("vm", v), "up", vm_hash, f"v{v}", devices, mapping)
        items.append((report, match_names([d.as_vm_disk() for d in devices], mapping)))
    return items


async def _statements(pg_dsn: str, host_id: str, items: list[tuple[VmReport, Any]]) -> list[str]:
    """The statements one ``apply_reports`` sends, through a store whose pool logs them."""
    sent: list[str] = []

    async def log_queries(conn: Any) -> None:
        conn.add_query_logger(lambda record: sent.append(record.query))

    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=1, init=log_queries)
    store = Store(pool, Metrics())
    try:
        await store.apply_reports(host_id, items)
    finally:
        await store.close()
    # Leave out asyncpg's one-off type introspection and the pool's reset on release.
    ours = [q.split()[0].rstrip(";") for q in sent if "jit" not in q and "typeinfo" not in q]
    return ours[: ours.index("COMMIT") + 1]


async def test_a_fleet_batch_costs_the_same_statements_as_one_disk(
    store: Store, pg_dsn: str
) -> None:
    """No round trip per VM or per disk: 200 VMs x 5 disks take as many statements as 1 x 1."""
    one = await _statements(pg_dsn, await _host(store), _fleet(1, 1, "a", first=1000))
    fleet_host = await _host(store)
    many = await _statements(pg_dsn, fleet_host, _fleet(200, 5, "a"))
    assert many == one
    assert many == [
        "BEGIN",
        "SELECT",  # the guard: foreign VMs, disks plugged elsewhere, compat, fence
        "SELECT",  # the VMs' current rows, locked
        "INSERT",  # VMs
        "INSERT",  # new disks
        "INSERT",  # devices and names
        "INSERT",  # history
        "DELETE",  # history beyond its bound
        "UPDATE",  # the guests' views that changed: their event ids
        "UPDATE",  # hashes, last
        "COMMIT",
    ]
    # Everything arrived: 1000 names with one history row each, and the hashes.
    async with store._pool.acquire() as conn:
        named = await conn.fetchval("SELECT count(*) FROM vm_device WHERE logical_name IS NOT NULL")
        history = await conn.fetchval("SELECT count(*) FROM logical_name_history")
        hashes = await conn.fetchval("SELECT count(*) FROM vms WHERE hash = 'a'")
    assert (named, history, hashes) == (1001, 1001, 201)
    # The same batch again: nothing changed, so only reads, and no history doubled.
    again = await _statements(pg_dsn, fleet_host, _fleet(200, 5, "a"))
    assert len(again) <= len(many)
    assert await _history(store, _id("vm", 0), _id("disk", 0, 0)) == [(None, "/dev/vdb")]


async def test_a_write_fenced_by_a_lost_lease_stores_nothing(store: Store, pg_dsn: str) -> None:
    host_id = await _host(store)
    lease = await asyncpg.connect(pg_dsn)
    await lease.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, host_id)
    fence = Fence(LOCK_CLASS, lease.get_server_pid())
    report = _report({disk_serial(DISK): {"name": "/dev/vdb"}})
    items = [(report, match_names([d.as_vm_disk() for d in report.devices], report.mapping))]
    assert (await store.apply_reports(host_id, items, fence=fence)).changes
    stranger = await asyncpg.connect(pg_dsn)  # a session that holds no lock
    with pytest.raises(LeaseLost):
        await store.apply_reports(
            host_id, items, fence=Fence(LOCK_CLASS, stranger.get_server_pid())
        )
    await stranger.close()
    await lease.close()  # the lease is gone: its locks with it

    async def released() -> bool:
        async with store._pool.acquire() as conn:
            return not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", fence.pid
            )

    await wait_until(released)
    moved = _report({disk_serial(DISK): {"name": "/dev/vdq"}}, vm_hash="h2")
    items = [(moved, match_names([d.as_vm_disk() for d in moved.devices], moved.mapping))]
    with pytest.raises(LeaseLost):
        await store.apply_reports(host_id, items, fence=fence)
    att = await store.get_attachment(VM, DISK)
    assert att is not None and att.logical_name == "/dev/vdb"


async def test_a_vm_of_another_host_is_left_out_and_reported_foreign(store: Store) -> None:
    owner, rogue = await _host(store), await _host(store)
    report = _report({disk_serial(DISK): {"name": "/dev/vdb"}})
    match = match_names([d.as_vm_disk() for d in report.devices], report.mapping)
    assert (await store.apply_reports(owner, [(report, match)])).foreign == []
    empty = VmReport(VM, "down", "rogue", "stolen", (), {})
    stored = await store.apply_reports(rogue, [(empty, match_names([], {}))])
    assert stored.foreign == [VM] and stored.changes == []
    att = await store.get_attachment(VM, DISK)
    vm = await store.get_vm(VM)
    assert att is not None and att.active and att.logical_name == "/dev/vdb"
    assert vm is not None and vm.host_id == owner and vm.name == "vm1"


async def test_history_is_bounded_per_disk_and_keeps_the_newest(store: Store) -> None:
    host_id = await _host(store)
    for n in range(HISTORY_PER_DISK + 30):
        report = _report({disk_serial(DISK): {"name": f"/dev/vd{n}"}}, vm_hash=f"h{n}")
        await _apply(store, host_id, report)
    kept = await _history(store, VM, DISK)
    assert len(kept) == HISTORY_PER_DISK
    assert kept[-1] == (f"/dev/vd{HISTORY_PER_DISK + 28}", f"/dev/vd{HISTORY_PER_DISK + 29}")


def _vm_report(vm_id: str, disk: str, name: str, vm_hash: str = "h1") -> Any:
    device = HostDevice(disk, str(uuid.uuid4()), disk_serial(disk), "virtio", "0000:00:07.0")
    report = VmReport(vm_id, "up", vm_hash, "vm", (device,), {disk_serial(disk): {"name": name}})
    return report, match_names([device.as_vm_disk()], report.mapping)


async def test_several_hosts_share_a_transaction_and_each_keeps_its_own_outcome(
    store: Store, pg_dsn: str
) -> None:
    good, lost, old, rogue = [await _host(store) for _ in range(4)]
    conn = await asyncpg.connect(pg_dsn)
    try:  # the "old" host sits in a cluster too old to keep names
        await conn.execute(
            "INSERT INTO clusters (id, name, compatibility_version) VALUES ($1, 'old', '3.4')",
            uuid.UUID(int=7),
        )
        await conn.execute("UPDATE hosts SET cluster_id = $1 WHERE id = $2", uuid.UUID(int=7), old)
        await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", LOCK_CLASS, good)
        fence = Fence(LOCK_CLASS, conn.get_server_pid())
        vm_good, vm_other, vm_lost, vm_old = (str(uuid.uuid4()) for _ in range(4))
        disk, other_disk = str(uuid.uuid4()), str(uuid.uuid4())
        first = [
            _vm_report(vm_good, disk, "/dev/vda"),
            _vm_report(vm_other, other_disk, "/dev/vda"),
        ]
        await store.apply_reports(good, first, fence=fence)
        batches = [
            HostReports(good, [_vm_report(vm_good, disk, "/dev/vdb")], fence),
            HostReports(lost, [_vm_report(vm_lost, str(uuid.uuid4()), "/dev/vdc")], fence),
            HostReports(old, [_vm_report(vm_old, str(uuid.uuid4()), "/dev/vdd")]),
            HostReports(rogue, [_vm_report(vm_other, other_disk, "/dev/evil")]),
        ]
        async with store._pool.acquire() as tx, tx.transaction():
            outcomes = await apply_many(tx, store._exec, batches)
        stored_good, stored_lost, stored_old, stored_rogue = outcomes
        assert isinstance(stored_good, Stored) and [c.new for c in stored_good.changes] == [
            "/dev/vdb"
        ]
        assert isinstance(stored_lost, LeaseLost)  # its fence is not held: nothing of it
        assert await store.get_vm(vm_lost) is None
        assert isinstance(stored_old, Stored) and stored_old.changes == []
        assert await store.get_vm(vm_old) is not None  # stored, without names
        assert isinstance(stored_rogue, Stored) and stored_rogue.foreign == [vm_other]
        att = await store.get_attachment(vm_good, disk)
        assert att is not None and att.logical_name == "/dev/vdb"
        att = await store.get_attachment(vm_other, other_disk)
        assert att is not None and att.logical_name == "/dev/vda"  # the rogue changed nothing
        # The same VM from two hosts at once, through the store: stored apart, the
        # registered host's report kept, the other's ignored.
        both = await asyncio.gather(
            store.apply_reports(good, [_vm_report(vm_other, other_disk, "/dev/vde", "h2")]),
            store.apply_reports(rogue, [_vm_report(vm_other, other_disk, "/dev/evil", "h3")]),
        )
        assert both[1].foreign == [vm_other] and [c.new for c in both[0].changes] == ["/dev/vde"]
    finally:
        await conn.close()


async def test_guest_agents_are_written_once_and_reloaded_with_the_hashes(store: Store) -> None:
    """SPEC §17: only a change that moved a row is returned (so logged and announced), and
    the stored agent comes back with the hash, so a restarted engine offers nothing."""
    host_id = await _host(store)
    await _apply(store, host_id, _report({}))
    since = datetime.now(UTC)
    up = AgentChange(VM, GuestAgent("up", since, ("agent",)), {"agent": since})
    assert await store.set_guest_agents(host_id, [up]) == [up]
    assert await store.set_guest_agents(host_id, [up]) == []  # held already: no row moved
    assert (await store.vm_states(host_id))[VM].agent == ("up", ("agent",))
    other_host = await _host(store)  # a host that does not hold the VM writes nothing
    gone = AgentChange(VM, GuestAgent("none", since), {})
    assert await store.set_guest_agents(other_host, [gone]) == []
