"""Issue 11 over real processes: a rogue or slow host, races, and a host's own faults.

* A second host reporting a VM registered on the first changes nothing.
* An unplug the guest holds back for 10 s delays neither polls nor another VM's plug.
* Two plugs of one disk into two VMs at once, through two engines: one is refused.
* A host whose state directory holds a corrupt file, or is full, keeps serving; a
  full one refuses the changes it cannot write (issue 23) and takes them once it
  has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from diskname.protocol.host_wire import Code
from diskname.streams import JsonRpcClient, RpcError

from .conftest import wait_until
from .fleet import engine_process, host_process, sim_guest
from .rest import Rest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
REFRESH = 0.5


async def metric(rest: Rest, name: str) -> float:
    async with rest.http.get("/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.split("{")[0].split(" ")[0] == name
    )


async def register(rest: Rest, name: str, port: int) -> str:
    body = {"name": name, "address": "127.0.0.1", "port": port}
    host_id: str = (await rest.ok("POST", "/api/hosts", body, status=201))["id"]

    async def up() -> bool:
        hosts = (await rest.ok("GET", "/api/hosts"))["host"]
        return any(h["id"] == host_id and h["status"] == "up" for h in hosts)

    await wait_until(up, timeout=15)
    return host_id


@contextlib.asynccontextmanager
async def guests(channels: Path, vm_ids: list[str]) -> AsyncIterator[None]:
    """The real agent (sim source) in each VM, connected over the host's sockets."""
    run = sim_guest()
    tasks = [
        asyncio.create_task(
            run(vm, channels / f"{vm}.ovirt-guest-agent.0", channels / f"{vm}.sim-hw")
        )
        for vm in vm_ids
    ]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def new_vm(rest: Rest, host_id: str, name: str) -> tuple[str, str]:
    vm = (await rest.ok("POST", "/api/vms", {"name": name, "host": {"id": host_id}}, 201))["id"]
    (root,) = (await rest.ok("GET", f"/api/vms/{vm}/diskattachments"))["disk_attachment"]
    return vm, root["id"]


async def test_a_rogue_host_reporting_another_hosts_vm_changes_nothing(
    pg_dsn: str, short_dir: Path
) -> None:
    async with (
        host_process(short_dir / "h1") as (_, port1),
        host_process(short_dir / "h2") as (_, port2),
        engine_process(pg_dsn, short_dir / "e", REFRESH) as (_, base),
        aiohttp.ClientSession(base_url=base) as http,
    ):
        rest = Rest(http)
        real = await register(rest, "real", port1)
        vm, root = await new_vm(rest, real, "victim")
        async with guests(short_dir / "h1" / "ch", [vm]):
            await rest.wait_name(vm, root, timeout=15)
            before = await rest.attachment(vm, root)
            # The rogue host claims the VM, with no disks at all.
            async with await JsonRpcClient.connect("127.0.0.1", port2) as rogue:
                await rogue.call("VM.create", {"vmId": vm, "name": "stolen", "devices": []})
            await register(rest, "rogue", port2)

            async def ignored() -> bool:
                return await metric(rest, "diskname_engine_foreign_vm_reports_total") > 0

            await wait_until(ignored, timeout=15)
            polls = await metric(rest, "diskname_engine_polls_total")
            await wait_until(
                lambda: _more(rest, "diskname_engine_polls_total", polls + 6), timeout=15
            )
            # Still active, same name; only the victim's own guest moves reported_at on.
            after = await rest.attachment(vm, root)
            assert {**after, "reported_at": None} == {**before, "reported_at": None}
            vm_row = await rest.ok("GET", f"/api/vms/{vm}")
            assert vm_row["host"]["id"] == real and vm_row["name"] == "victim"


async def _more(rest: Rest, name: str, than: float) -> bool:
    return await metric(rest, name) >= than


async def test_an_unplug_held_10s_delays_neither_polls_nor_another_vms_plug(
    pg_dsn: str, short_dir: Path
) -> None:
    async with (
        host_process(short_dir / "h", "--sim-unplug-delay", "10") as (_, port),
        engine_process(pg_dsn, short_dir / "e", REFRESH) as (_, base),
        aiohttp.ClientSession(base_url=base, timeout=aiohttp.ClientTimeout(total=60)) as http,
    ):
        rest = Rest(http)
        host_id = await register(rest, "h", port)
        slow, _ = await new_vm(rest, host_id, "slow")
        other, _ = await new_vm(rest, host_id, "other")
        async with guests(short_dir / "h" / "ch", [slow, other]):
            disk = await rest.hotplug(slow, "virtio")
            await rest.wait_name(slow, disk, timeout=15)
            loop = asyncio.get_running_loop()
            started = loop.time()
            unplug = asyncio.create_task(
                rest.call("PUT", f"/api/vms/{slow}/diskattachments/{disk}", {"active": False})
            )
            polls = await metric(rest, "diskname_engine_polls_total")
            plugged = await rest.hotplug(other, "virtio_scsi")
            name, waited = await rest.wait_name(other, plugged, timeout=5)
            assert name.startswith("/dev/sd") and loop.time() - started < 5
            await wait_until(lambda: _more(rest, "diskname_engine_polls_total", polls + 5), 5)
            assert not unplug.done()  # the guest still holds the disk
            status, att = await unplug
            held = loop.time() - started
            assert status == 200 and att["active"] is False and att["logical_name"] is None
            assert 9.5 < held < 20
            print(f"other VM named after {waited * 1000:.0f} ms while the unplug took {held:.1f} s")


async def test_two_plugs_of_one_disk_into_two_vms_through_two_engines_one_refused(
    pg_dsn: str, short_dir: Path
) -> None:
    async with (
        host_process(short_dir / "h") as (_, port),
        engine_process(pg_dsn, short_dir / "e1", REFRESH) as (_, base1),
        engine_process(pg_dsn, short_dir / "e2", REFRESH) as (_, base2),
        aiohttp.ClientSession(base_url=base1) as http1,
        aiohttp.ClientSession(base_url=base2) as http2,
    ):
        one, two = Rest(http1), Rest(http2)
        host_id = await register(one, "h", port)
        vm_a, _ = await new_vm(one, host_id, "a")
        vm_b, _ = await new_vm(one, host_id, "b")
        await wait_until(lambda: _listed(two, vm_b), timeout=10)
        db = await asyncpg.connect(pg_dsn)
        try:
            for _ in range(8):
                disk = await one.hotplug(vm_a, "virtio")
                await one.ok("DELETE", f"/api/vms/{vm_a}/diskattachments/{disk}", status=204)
                body = {"disk": {"id": disk}, "interface": "virtio"}
                results = await asyncio.gather(
                    one.call("POST", f"/api/vms/{vm_a}/diskattachments", body),
                    two.call("POST", f"/api/vms/{vm_b}/diskattachments", body),
                )
                assert sorted(status for status, _ in results) == [201, 409], results
                plugged = await db.fetchval(
                    "SELECT count(*) FROM vm_device WHERE disk_id = $1 AND is_plugged", disk
                )
                assert plugged == 1
        finally:
            await db.close()


async def _listed(rest: Rest, vm: str) -> bool:
    status, _ = await rest.call("GET", f"/api/vms/{vm}")
    return status == 200


async def test_a_corrupt_state_file_is_moved_aside_and_the_host_serves(short_dir: Path) -> None:
    root = short_dir / "h"
    good = str(uuid.uuid4())
    async with (
        host_process(root) as (_, port),
        await JsonRpcClient.connect("127.0.0.1", port) as rpc,
    ):
        await rpc.call("VM.create", {"vmId": good, "name": "good", "devices": []})
    vms = root / "state" / "vms"
    (vms / f"{uuid.uuid4()}.json").write_bytes(b'{"vmId": "x", "devices": {not json')
    (vms / f"{uuid.uuid4()}.json").write_bytes(b'{"vmId": 5, "name": [], "devices": "no"}')
    (vms / f"{uuid.uuid4()}.json").write_bytes(b'["a", "list"]')
    async with (
        host_process(root) as (_, port),
        await JsonRpcClient.connect("127.0.0.1", port) as rpc,
    ):
        assert [vm["vmId"] for vm in await rpc.call("Host.getAllVmStats")] == [good]
    assert len(list(vms.glob("*.corrupt-*"))) == 3
    assert (vms.stat().st_mode & 0o777) == 0o700
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in vms.glob("*.json"))


@contextlib.contextmanager
def tiny_filesystem(path: Path, size: str = "64k"):  # type: ignore[no-untyped-def]
    """A tmpfs of ``size`` at ``path``, or a skip where mounting is not allowed."""
    path.mkdir(parents=True)
    mount = shutil.which("mount")
    result = subprocess.run(
        [mount or "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_state_directory_refuses_what_it_cannot_write_never_fatal(
    short_dir: Path,
) -> None:
    with tiny_filesystem(short_dir / "small", size="1m"):
        filler = short_dir / "small" / "filler"
        filler.write_bytes(b"\0" * (1024 * 1024 - 40 * 4096))  # room for a few files only
        state = short_dir / "small" / "state"
        async with (
            host_process(short_dir / "h", "--state-dir", str(state)) as (proc, port),
            await JsonRpcClient.connect("127.0.0.1", port) as rpc,
        ):
            created, refused = set(), {}
            for n in range(60):
                vm = str(uuid.uuid4())
                params = {"vmId": vm, "name": f"v{n}", "devices": [_drive()]}
                try:
                    await rpc.call("VM.create", params)
                except RpcError as exc:
                    assert exc.code == Code.STATE_NOT_WRITTEN, exc
                    refused[vm] = params
                    continue
                created.add(vm)
            assert created and refused  # the disk filled up part way
            assert len(await rpc.call("Host.getAllVmStats")) == len(created)
            assert proc.returncode is None

            def saved() -> set[str]:
                return {p.stem for p in (state / "vms").glob("*.json")}

            assert saved() == created  # everything acknowledged is written
            filler.unlink()  # room again: what was refused is taken now
            for params in refused.values():
                await rpc.call("VM.create", params)
            await wait_until(lambda: saved() == created | set(refused), timeout=20)
            assert len(await rpc.call("Host.getAllVmStats")) == 60


def _drive() -> dict[str, str]:
    return {"diskId": str(uuid.uuid4()), "iface": "virtio"}
