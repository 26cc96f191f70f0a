"""The per-host monitor against a fake JSON-RPC host over loopback, and real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from diskname.engine.config import EngineConfig
from diskname.engine.db.store import Store
from diskname.engine.events import EventHub
from diskname.engine.hosts.monitor import HostMonitor
from diskname.engine.metrics import Metrics
from diskname.protocol.disks import disk_serial

from .conftest import wait_until
from .engine_fakehost import FakeHost

DISK = "1a2b3c4d-5e6f-4a8b-9c0d-112233445566"
DISK2 = "2b3c4d5e-6f7a-4b8c-9d0e-223344556677"


@dataclass
class Rig:
    fake: FakeHost
    store: Store
    metrics: Metrics
    monitor: HostMonitor
    hub: EventHub
    vm_id: str

    async def name(self, disk_id: str = DISK) -> str | None:
        att = await self.store.get_attachment(self.vm_id, disk_id)
        return att.logical_name if att else None

    def plug(self, disk_id: str, name: str | None) -> None:
        vm = self.fake.vms[self.vm_id]
        vm.devices.append(
            {
                "deviceId": str(uuid.uuid4()),
                "diskId": disk_id,
                "serial": disk_serial(disk_id),
                "iface": "virtio",
                "address": None,
                "plugged": True,
                "type": "disk",
            }
        )
        if name:
            vm.mapping[f"  0QEMU_QEMU_HARDDISK_{disk_serial(disk_id)}"] = {"name": name}
        self.fake.notify(self.vm_id)


@contextlib.asynccontextmanager
async def rig(pg_dsn: str, **config: object) -> AsyncIterator[Rig]:
    fake = FakeHost()
    port = await fake.start()
    metrics = Metrics()
    store = await Store.open(pg_dsn, metrics)
    await store.migrate()
    host = await store.add_host(str(uuid.uuid4()), "h1", "127.0.0.1", port)
    vm_id = str(uuid.uuid4())
    fake.add_vm(vm_id, "vm1")
    hub = EventHub()
    cfg = EngineConfig(dsn=pg_dsn, **config)  # type: ignore[arg-type]
    monitor = HostMonitor(host, store, metrics, hub, cfg)
    monitor.grant()  # a lone engine owns every host
    task = asyncio.create_task(monitor.run())
    try:
        yield Rig(fake, store, metrics, monitor, hub, vm_id)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.close()
        await store.close()


async def test_new_vm_and_its_names_are_adopted(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.05) as r:
        r.plug(DISK, "/dev/vdb")
        assert await wait_until(lambda: r.name()) == "/dev/vdb"
        vm = await r.store.get_vm(r.vm_id)
        assert vm is not None and vm.name == "vm1" and vm.status == "up"
        host = await r.store.get_host(r.monitor.host.id)
        assert host is not None and host.status == "up"


async def test_nothing_changing_means_no_fetches_and_no_writes(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.02) as r:
        r.plug(DISK, "/dev/vdb")
        await wait_until(lambda: r.name())
        await wait_until(lambda: r.metrics.polls >= 2)
        fetches, writes, polls = r.metrics.full_list_calls, r.metrics.db_writes, r.metrics.polls
        await wait_until(lambda: r.metrics.polls >= polls + 10)
        assert r.metrics.full_list_calls == fetches
        assert r.metrics.db_writes == writes
        assert r.fake.calls["Host.getVMFullList"] == fetches


async def test_without_the_hash_gate_every_cycle_fetches_but_writes_nothing(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.02, hash_gate=False) as r:
        r.plug(DISK, "/dev/vdb")
        await wait_until(lambda: r.name())
        await wait_until(lambda: r.metrics.full_list_calls >= 2)
        fetches, writes = r.metrics.full_list_calls, r.metrics.db_writes
        await wait_until(lambda: r.metrics.full_list_calls >= fetches + 5)
        assert r.metrics.db_writes == writes


async def test_a_notification_fetches_at_once(pg_dsn: str) -> None:
    # One poll at connect, then none for a minute: only the notification can do it.
    async with rig(pg_dsn, refresh_interval=60) as r:
        await wait_until(lambda: r.metrics.polls == 1 and r.monitor.connected.is_set())
        await wait_until(lambda: r.store.get_vm(r.vm_id))
        r.plug(DISK, "/dev/vdb")
        assert await wait_until(lambda: r.name()) == "/dev/vdb"
        assert r.metrics.polls == 1


async def test_notifications_ignored_when_events_are_off(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=60, events=False) as r:
        await wait_until(lambda: r.store.get_vm(r.vm_id))
        fetches = r.metrics.full_list_calls
        r.plug(DISK, "/dev/vdb")
        await r.monitor.call("Host.ping")  # the notification was read before this answer
        assert r.metrics.full_list_calls == fetches
        assert await r.name() is None


async def test_host_side_unplug_clears_the_name(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=60) as r:
        r.plug(DISK, "/dev/vdb")
        r.plug(DISK2, "/dev/vdc")
        await wait_until(lambda: r.name(DISK2))
        vm = r.fake.vms[r.vm_id]
        vm.devices = [d for d in vm.devices if d["diskId"] != DISK]
        r.fake.notify(r.vm_id)
        await wait_until(lambda: r.store.get_attachment(r.vm_id, DISK))
        await wait_until(lambda: _is_unplugged(r))
        assert await r.name() is None and await r.name(DISK2) == "/dev/vdc"


async def _is_unplugged(r: Rig) -> bool:
    att = await r.store.get_attachment(r.vm_id, DISK)
    return att is not None and not att.active


async def test_changes_are_published_as_events(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=60) as r:
        with r.hub.subscription() as events:
            r.plug(DISK, "/dev/vdb")
            event = await events.next(5)
        assert event is not None
        assert (event["vm_id"], event["disk_id"], event["old"], event["new"]) == (
            r.vm_id,
            DISK,
            None,
            "/dev/vdb",
        )


async def test_old_cluster_gets_no_names(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with rig(pg_dsn, refresh_interval=60) as r:
            await conn.execute("UPDATE clusters SET compatibility_version = '3.4'")
            r.plug(DISK, "/dev/vdb")
            await wait_until(lambda: r.store.get_attachment(r.vm_id, DISK))
            await wait_until(
                lambda: r.monitor.sync.stored_hash(r.vm_id) == r.fake.vms[r.vm_id].hash
            )
            assert await r.name() is None
    finally:
        await conn.close()


async def test_reconnects_and_marks_the_host(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.05) as r:
        await wait_until(r.monitor.connected.is_set)
        port = r.fake.port
        await r.fake.close()
        await wait_until(lambda: _host_status(r, "unreachable"))
        assert not r.monitor.connected.is_set()
        again = FakeHost()
        again.vms = r.fake.vms
        await again.start(port)
        try:
            await wait_until(r.monitor.connected.is_set, timeout=10)
            await wait_until(lambda: _host_status(r, "up"))
        finally:
            await again.close()


async def _vm_status(r: Rig, status: str) -> bool:
    vm = await r.store.get_vm(r.vm_id)
    return vm is not None and vm.status == status


async def test_a_host_gone_leaves_its_vms_unknown_in_one_write(pg_dsn: str) -> None:
    """SPEC §19: the host's VMs are ``unknown`` while it is unreachable; back with it."""
    async with rig(pg_dsn, refresh_interval=0.05) as r:
        await wait_until(lambda: _vm_status(r, "up"))
        port, writes = r.fake.port, r.metrics.db_writes
        await r.fake.close()
        await wait_until(lambda: _vm_status(r, "unknown"))
        assert await _host_status(r, "unreachable")
        assert r.metrics.db_writes == writes + 1  # the host and its VMs, one statement
        await asyncio.sleep(0.3)  # sync-ok: reconnect attempts meanwhile write nothing
        assert r.metrics.db_writes == writes + 1
        again = FakeHost()
        again.vms = r.fake.vms
        await again.start(port)
        try:
            await wait_until(lambda: _vm_status(r, "up"), timeout=10)
        finally:
            await again.close()


async def test_two_disks_given_one_name_both_show_the_conflict(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.05) as r:
        r.plug(DISK, "/dev/vdb")
        r.plug(DISK2, "/dev/vdb")

        async def conflicted() -> bool:
            atts = [await r.store.get_attachment(r.vm_id, d) for d in (DISK, DISK2)]
            return all(a is not None and a.name_conflict == "/dev/vdb" for a in atts)

        await wait_until(conflicted)
        for disk in (DISK, DISK2):
            att = await r.store.get_attachment(r.vm_id, disk)
            assert att is not None and att.logical_name is None
            assert att.to_json()["name_conflict"] == {"name": "/dev/vdb"}
        assert r.metrics.rejected["duplicate_name"] >= 2
        vm = r.fake.vms[r.vm_id]
        vm.mapping[f"  0QEMU_QEMU_HARDDISK_{disk_serial(DISK2)}"] = {"name": "/dev/vdc"}
        r.fake.notify(r.vm_id)
        assert await wait_until(lambda: r.name(DISK2)) == "/dev/vdc"
        att = await r.store.get_attachment(r.vm_id, DISK)
        assert att is not None and att.logical_name == "/dev/vdb" and att.name_conflict is None


async def _host_status(r: Rig, status: str) -> bool:
    host = await r.store.get_host(r.monitor.host.id)
    return host is not None and host.status == status


async def test_engine_action_forgets_the_hash(pg_dsn: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.02) as r:
        r.plug(DISK, "/dev/vdb")
        await wait_until(lambda: r.name())
        fetches = r.metrics.full_list_calls
        async with r.monitor.vm_action(r.vm_id):
            pass
        # Same hash on the host, but the engine touched the VM: fetch it again.
        await wait_until(lambda: r.metrics.full_list_calls > fetches)
        assert await r.name() == "/dev/vdb"


@pytest.mark.parametrize("method", ["Host.getAllVmStats", "Host.getVMFullList"])
async def test_host_errors_do_not_stop_the_monitor(pg_dsn: str, method: str) -> None:
    async with rig(pg_dsn, refresh_interval=0.02) as r:
        r.fake.fail[method] = -32603
        r.plug(DISK, "/dev/vdb")
        await wait_until(lambda: r.fake.calls[method] >= 2)
        del r.fake.fail[method]
        assert await wait_until(lambda: r.name()) == "/dev/vdb"


async def test_host_back_at_an_old_hash_is_still_read_after_an_engine_unplug(pg_dsn: str) -> None:
    # FACTS §4: unplug then quick re-plug left the host at the hash the engine
    # had stored, so the engine never looked again and the name stayed empty.
    async with rig(pg_dsn, refresh_interval=60) as r:
        r.plug(DISK, "/dev/vdb")
        await wait_until(lambda: r.name())
        old_hash = r.fake.vms[r.vm_id].hash
        async with r.monitor.vm_action(r.vm_id):
            await r.store.mark_unplugged(r.vm_id, DISK)
        assert await r.name() is None
        assert r.fake.vms[r.vm_id].hash == old_hash
        r.fake.notify(r.vm_id)  # the host is back where it was
        assert await wait_until(lambda: r.name()) == "/dev/vdb"


async def test_a_vm_the_database_refuses_holds_back_no_other(pg_dsn: str) -> None:
    """The batch is retried VM by VM; the refused one is fetched again until it fits."""
    async with rig(pg_dsn, refresh_interval=0.05, events=False) as r:
        await wait_until(lambda: r.store.get_vm(r.vm_id))
        other = str(uuid.uuid4())
        r.fake.add_vm(other, "vm2")
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute(
                f"""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN
                      IF NEW.vm_id = '{other}' THEN RAISE EXCEPTION 'refused'; END IF;
                      RETURN NEW;
                    END $$;
                    CREATE TRIGGER refuse_t BEFORE INSERT ON vm_device
                      FOR EACH ROW EXECUTE FUNCTION refuse();"""
            )
            asked: list[list[str]] = []
            full_list = r.fake._Host_getVMFullList
            r.fake._Host_getVMFullList = lambda p: asked.append(p["vmList"]) or full_list(p)
            r.plug(DISK, "/dev/vdb")
            first = r.fake.vms[r.vm_id].devices[0]
            r.fake.vms[other].devices = [dict(first, diskId=DISK2, serial=disk_serial(DISK2))]
            assert await wait_until(lambda: r.name()) == "/dev/vdb"
            assert sorted(asked[0]) == sorted([r.vm_id, other])  # one batch, both VMs
            await wait_until(lambda: len(asked) >= 3)  # the refused one, again and again
            assert await r.store.get_attachment(other, DISK2) is None
            await conn.execute("DROP TRIGGER refuse_t ON vm_device")
            assert await wait_until(lambda: r.store.get_attachment(other, DISK2))
        finally:
            await conn.close()
