"""A burst of REST hot-plugs, batched: each request still gets its own answer (real PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg

from .conftest import wait_until
from .test_engine_api import Api, engine


async def _vm(api: Api, host_id: str, name: str) -> tuple[str, str]:
    vm = await api.call("POST", "/api/vms", {"name": name, "host": {"id": host_id}}, status=201)
    (root,) = (await api.call("GET", f"/api/vms/{vm['id']}/diskattachments"))["disk_attachment"]
    return vm["id"], root["id"]


async def _post(api: Api, vm_id: str, disk_id: str | None = None) -> tuple[int, Any]:
    body: dict[str, Any] = {"interface": "virtio", "active": True}
    if disk_id is not None:
        body["disk"] = {"id": disk_id}
    url = f"{api.base}/api/vms/{vm_id}/diskattachments"
    async with api.http.post(url, json=body) as resp:
        return resp.status, await resp.json()


async def test_hot_plugs_sent_together_each_get_their_own_answer(pg_dsn: str) -> None:
    async with engine(pg_dsn) as api:
        host_id = await api.host()
        vms = [await _vm(api, host_id, f"vm{i}") for i in range(4)]
        (a, root_a), (b, _), (gone, _), (c, _) = vms
        del api.fake.vms[gone]  # the host no longer knows this VM: its plug is refused
        missing = str(uuid.uuid4())
        requests = [
            _post(api, b, root_a),  # plugged into a: 409
            _post(api, b, missing),  # no such disk: 422
            _post(api, missing),  # no such VM: 404
            _post(api, gone),  # the host refuses: rolled back
            *(_post(api, vm) for vm in (a, b, c) for _ in range(10)),
        ]
        answers = await asyncio.gather(*requests)
        assert (
            answers[0][0] == 409 and "plugged into another VM" in answers[0][1]["error"]["message"]
        )
        assert answers[1][0] == 422 and missing in answers[1][1]["error"]["message"]
        assert answers[2][0] == 404
        assert (
            answers[3][0] == 409 and "refused VM.hotplugDisk" in answers[3][1]["error"]["message"]
        )
        plugged = answers[4:]
        assert {status for status, _ in plugged} == {201}
        assert all(att["active"] and att["vm"]["id"] in (a, b, c) for _, att in plugged)
        assert len({att["id"] for _, att in plugged}) == 30
        for vm_id in (a, b, c):
            atts = (await api.call("GET", f"/api/vms/{vm_id}/diskattachments"))["disk_attachment"]
            assert len(atts) == 11 and all(x["active"] for x in atts)
        gone_atts = (await api.call("GET", f"/api/vms/{gone}/diskattachments"))["disk_attachment"]
        assert len(gone_atts) == 1  # only its root disk: the refused plug left nothing
        conn = await asyncpg.connect(pg_dsn)
        try:  # and no disk without an attachment (the refused plug's new disk went too)
            orphans = "SELECT count(*) FROM disks d WHERE NOT EXISTS"
            orphans += " (SELECT 1 FROM vm_device v WHERE v.disk_id = d.id)"
            assert await conn.fetchval(orphans) == 0
        finally:
            await conn.close()
        # The guests name the plugged disks as usual.
        some = plugged[0][1]
        await wait_until(lambda: api.logical_name(some["vm"]["id"], some["id"]), timeout=10)
