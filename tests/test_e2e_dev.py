"""The whole loop in one process: REST → engine → host → simulated guest → back.

Real PostgreSQL, real TCP and UNIX sockets; only the hypervisor and the guest
kernel are simulated. These are the acceptance paths of the first issue.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from diskname.dev import DevCluster, DevConfig

from .conftest import started
from .rest import Rest


@asynccontextmanager
async def dev_cluster(dsn: str, **overrides: Any) -> AsyncIterator[Rest]:
    state = Path(tempfile.mkdtemp(prefix="dn"))
    cfg = DevConfig(
        **{
            "hosts": 1,
            "vms": 2,
            "http_port": 0,
            "state_dir": state,
            "dsn": dsn,
            "name_delay": 0.05,
            **overrides,
        }
    )
    cluster = DevCluster(cfg)
    try:
        async with (
            started(cluster),
            aiohttp.ClientSession(base_url=cluster.base_url) as http,
        ):
            yield Rest(http)
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def cluster(pg_dsn: str) -> Callable[..., Any]:
    return lambda **kw: dev_cluster(pg_dsn, **kw)


async def test_hotplug_unplug_replug_virtio_and_scsi(cluster: Callable[..., Any]) -> None:
    async with cluster() as rest:
        assert (await rest.call("GET", "/healthz"))[0] == 200
        vm = await rest.first_vm()
        disk = await rest.hotplug(vm, "virtio")
        name, _ = await rest.wait_name(vm, disk)
        assert name == "/dev/vdb"  # vda is the root disk
        scsi = await rest.hotplug(vm, "virtio_scsi")
        scsi_name, _ = await rest.wait_name(vm, scsi)
        assert re.fullmatch(r"/dev/sd[a-z]+", scsi_name)

        await rest.ok("PUT", f"/api/vms/{vm}/diskattachments/{disk}", {"active": False})
        await rest.wait_unnamed(vm, disk)
        assert (await rest.attachment(vm, disk))["active"] is False
        await rest.ok("PUT", f"/api/vms/{vm}/diskattachments/{disk}", {"active": True})
        again, _ = await rest.wait_name(vm, disk)
        assert again == "/dev/vdb"


async def test_root_disk_is_named_and_other_vm_untouched(cluster: Callable[..., Any]) -> None:
    async with cluster() as rest:
        vms = (await rest.ok("GET", "/api/vms"))["vm"]
        assert len(vms) == 2
        for vm in vms:
            atts = (await rest.ok("GET", f"/api/vms/{vm['id']}/diskattachments"))["disk_attachment"]
            assert len(atts) == 1
            name, _ = await rest.wait_name(vm["id"], atts[0]["id"])
            assert name == "/dev/vda"
        disk = await rest.hotplug(vms[0]["id"], "virtio")
        await rest.wait_name(vms[0]["id"], disk)
        other = await rest.ok("GET", f"/api/vms/{vms[1]['id']}/diskattachments")
        assert [a["logical_name"] for a in other["disk_attachment"]] == ["/dev/vda"]


async def test_guest_names_the_disk_long_after_the_configuration_changed(
    cluster: Callable[..., Any],
) -> None:
    # The race the feature exists for: the host reports the new device (new
    # hash) first; the guest names it much later. A long refresh interval
    # means only the host's notification of the *mapping* change can help.
    async with cluster(name_delay=1.0, refresh_interval=60.0) as rest:
        vm = await rest.first_vm()
        disk = await rest.hotplug(vm, "virtio")
        await rest.wait_name(vm, disk, timeout=10)


async def test_quick_unplug_and_replug_ends_named(cluster: Callable[..., Any]) -> None:
    async with cluster(name_delay=0.2) as rest:
        vm = await rest.first_vm()
        disk = await rest.hotplug(vm, "virtio")
        await rest.wait_name(vm, disk)
        path = f"/api/vms/{vm}/diskattachments/{disk}"
        await rest.ok("PUT", path, {"active": False})
        await rest.ok("PUT", path, {"active": True})
        name, _ = await rest.wait_name(vm, disk)
        assert name == "/dev/vdb"


async def test_polling_alone_names_disks_without_notifications(pg_dsn: str) -> None:
    # Notifications off: only the periodic getAllVmStats poll can find the name.
    async with dev_cluster(pg_dsn, name_delay=0.3, refresh_interval=0.2, events=False) as rest:
        vm = await rest.first_vm()
        disk = await rest.hotplug(vm, "sata")
        name, _ = await rest.wait_name(vm, disk)
        assert name.startswith("/dev/sd")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/vms/not-a-uuid/diskattachments", {"interface": "virtio"}),
        ("/api/vms/{vm}/diskattachments", {"interface": "floppy"}),
        ("/api/vms/{vm}/diskattachments", "not an object"),
    ],
)
async def test_bad_requests_get_json_4xx(cluster: Callable[..., Any], path: str, body: Any) -> None:
    async with cluster(vms=1) as rest:
        vm = await rest.first_vm()
        status, data = await rest.call("POST", path.format(vm=vm), body)
        assert 400 <= status < 500
        assert data["error"]["message"]
        missing = "/api/vms/00000000-0000-0000-0000-000000000000/diskattachments"
        status, data = await rest.call("GET", missing)
        assert status == 404 and data["error"]["message"]


async def test_without_notifications_the_engine_follows_up_its_own_hotplug(pg_dsn: str) -> None:
    # Polls are a minute apart and notifications are ignored: only the engine's
    # short follow-up fetches after its own hot-plug can find the name in time.
    async with dev_cluster(pg_dsn, name_delay=0.3, refresh_interval=60.0, events=False) as rest:
        vm = await rest.first_vm()
        disk = await rest.hotplug(vm, "virtio")
        name, _ = await rest.wait_name(vm, disk, timeout=10)
        assert name == "/dev/vdb"
