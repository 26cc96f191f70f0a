"""The engine's REST API end to end: EngineService on port 0, a fake host, real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web

from diskname.engine import EngineConfig, EngineService
from diskname.engine.actions import Actions
from diskname.engine.db.store import Store
from diskname.engine.db.users import UserStore
from diskname.engine.events import EventHub
from diskname.engine.hosts.fleet import Monitors
from diskname.engine.http.app import EngineContext, make_app
from diskname.engine.http.auth import Authenticator, is_protected
from diskname.engine.metrics import Metrics
from diskname.engine.ovirt import is_ovirt_api
from diskname.protocol.host_wire import Code

from .conftest import wait_until
from .engine_fakehost import FakeHost

TOKEN = "s3cret"


@dataclass
class Api:
    http: aiohttp.ClientSession
    base: str
    fake: FakeHost
    engine: EngineService
    task: asyncio.Task[None]

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        status: int | None = None,
    ) -> Any:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        async with self.http.request(method, self.base + path, data=data, headers=headers) as resp:
            payload = await resp.read()
            if status is not None:
                assert resp.status == status, (resp.status, payload)
            if resp.content_type == "application/json":
                return orjson.loads(payload)
            return payload.decode()

    async def error(
        self, method: str, path: str, status: int, body: Any = None, raw: bytes | None = None
    ) -> str:
        answer = await self.call(method, path, body, raw=raw, status=status)
        assert answer["error"]["code"] == status
        message: str = answer["error"]["message"]
        return message

    async def host(self) -> str:
        host = await self.call(
            "POST",
            "/api/hosts",
            {"name": "h1", "address": "127.0.0.1", "port": self.fake.port},
            status=201,
        )
        host_id: str = host["id"]
        await wait_until(lambda: self._host_up(host_id))
        return host_id

    async def _host_up(self, host_id: str) -> bool:
        hosts = (await self.call("GET", "/api/hosts"))["host"]
        return any(h["id"] == host_id and h["status"] == "up" for h in hosts)

    async def vm(self) -> str:
        host_id = await self.host()
        vm = await self.call(
            "POST", "/api/vms", {"name": "vm1", "host": {"id": host_id}}, status=201
        )
        vm_id: str = vm["id"]
        return vm_id

    async def logical_name(self, vm_id: str, disk_id: str) -> Any:
        att = await self.call("GET", f"/api/vms/{vm_id}/diskattachments/{disk_id}", status=200)
        return att["logical_name"]


@contextlib.asynccontextmanager
async def engine(pg_dsn: str, token: str | None = None, **config: Any) -> AsyncIterator[Api]:
    fake = FakeHost(auto_guest=True)
    await fake.start()
    service = EngineService(
        EngineConfig(dsn=pg_dsn, http_port=0, refresh_interval=0.05, api_token=token, **config)
    )
    ready = asyncio.Event()
    task = asyncio.create_task(service.run(ready))
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait([waiter, task], timeout=20, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()
        assert ready.is_set()
        async with aiohttp.ClientSession(headers=headers) as http:
            yield Api(http, f"http://127.0.0.1:{service.http_port}", fake, service, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.close()


@pytest.fixture
async def api(pg_dsn: str) -> AsyncIterator[Api]:
    async with engine(pg_dsn) as api:
        yield api


async def test_health_page_and_metrics(api: Api) -> None:
    assert await api.call("GET", "/healthz", status=200) == {"status": "ok"}
    page = await api.call("GET", "/", status=200)
    assert "EventSource" in page and "/api/events" in page
    metrics = await api.call("GET", "/metrics", status=200)
    for name in (
        "diskname_engine_polls_total",
        "diskname_engine_full_list_calls_total",
        "diskname_engine_db_writes_total",
        "diskname_engine_guest_data_rejected_total",
        "diskname_engine_name_latency_seconds_bucket",
    ):
        assert name in metrics


async def test_hosts_and_vms(api: Api) -> None:
    host_id = await api.host()
    assert (await api.call("GET", f"/api/hosts/{host_id}"))["name"] == "h1"
    vm = await api.call("POST", "/api/vms", {"name": "vm1", "host": {"id": host_id}}, status=201)
    assert vm["name"] == "vm1" and vm["host"] == {"id": host_id}
    assert api.fake.calls["VM.create"] == 1 and vm["id"] in api.fake.vms
    assert [v["id"] for v in (await api.call("GET", "/api/vms"))["vm"]] == [vm["id"]]
    assert (await api.call("GET", f"/api/vms/{vm['id']}"))["id"] == vm["id"]
    atts = (await api.call("GET", f"/api/vms/{vm['id']}/diskattachments"))["disk_attachment"]
    assert len(atts) == 1 and atts[0]["interface"] == "virtio" and atts[0]["active"]
    root = atts[0]["id"]
    assert await wait_until(lambda: api.logical_name(vm["id"], root)) == "/dev/vda"
    await api.call("DELETE", f"/api/vms/{vm['id']}", status=204)
    assert vm["id"] not in api.fake.vms
    await api.error("GET", f"/api/vms/{vm['id']}", 404)


async def test_hot_plug_unplug_and_replug(api: Api) -> None:
    vm_id = await api.vm()
    base = f"/api/vms/{vm_id}/diskattachments"
    att = await api.call("POST", base, {"interface": "virtio_scsi", "active": True}, status=201)
    disk_id = att["id"]
    # The root disk is vm1_Disk1; a new disk without a name takes the next number.
    disk = {"id": disk_id, "name": "vm1_Disk2", "provisioned_size": 1 << 30, "status": "ok"}
    disk["serial"] = disk_id[:20]  # what the guest sees (SPEC §17)
    assert att["disk"] == disk and att["vm"] == {"id": vm_id}
    assert att["interface"] == "virtio_scsi" and att["active"] is True
    assert await wait_until(lambda: api.logical_name(vm_id, disk_id)) == "/dev/vdb"
    named = await api.call("GET", f"{base}/{disk_id}")
    assert named["logical_name_source"] == "serial" and named["logical_name_seen_at"]
    assert api.engine.metrics.name_latency.count >= 1

    off = await api.call("PUT", f"{base}/{disk_id}", {"active": False}, status=200)
    assert off["active"] is False and off["logical_name"] is None
    assert api.fake.calls["VM.hotunplugDisk"] == 1

    on = await api.call("PUT", f"{base}/{disk_id}", {"active": True}, status=200)
    assert on["active"] is True
    assert await wait_until(lambda: api.logical_name(vm_id, disk_id)) == "/dev/vdb"

    await api.call("DELETE", f"{base}/{disk_id}", status=204)
    assert api.fake.calls["VM.hotunplugDisk"] == 2
    await api.error("GET", f"{base}/{disk_id}", 404)
    assert len((await api.call("GET", base))["disk_attachment"]) == 1


async def test_quick_unplug_and_replug_gets_the_name_back(api: Api) -> None:
    vm_id = await api.vm()
    base = f"/api/vms/{vm_id}/diskattachments"
    disk_id = (await api.call("POST", base, {"interface": "virtio"}, status=201))["id"]
    await wait_until(lambda: api.logical_name(vm_id, disk_id))
    await api.call("PUT", f"{base}/{disk_id}", {"active": False}, status=200)
    await api.call("PUT", f"{base}/{disk_id}", {"active": True}, status=200)
    assert await wait_until(lambda: api.logical_name(vm_id, disk_id)) == "/dev/vdb"


async def test_existing_disk_can_move_between_vms(api: Api) -> None:
    vm_id = await api.vm()
    other = (
        await api.call(
            "POST",
            "/api/vms",
            {
                "name": "vm2",
                "host": {"id": (await api.call("GET", "/api/vms/" + vm_id))["host"]["id"]},
            },
            status=201,
        )
    )["id"]
    disk_id = (
        await api.call(
            "POST", f"/api/vms/{vm_id}/diskattachments", {"interface": "sata"}, status=201
        )
    )["id"]
    body = {"interface": "nvme", "disk": {"id": disk_id}}
    await api.error("POST", f"/api/vms/{other}/diskattachments", 409, body)
    await api.call("PUT", f"/api/vms/{vm_id}/diskattachments/{disk_id}", {"active": False})
    att = await api.call("POST", f"/api/vms/{other}/diskattachments", body, status=201)
    assert att["id"] == disk_id and att["active"]


async def test_server_sent_events(api: Api) -> None:
    vm_id = await api.vm()
    async with api.http.get(api.base + "/api/events") as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert (await resp.content.readline()).startswith(b":")
        att = await api.call(
            "POST", f"/api/vms/{vm_id}/diskattachments", {"interface": "virtio"}, status=201
        )
        event = await asyncio.wait_for(_next_event(resp, att["id"]), 10)
    assert event["vm_id"] == vm_id and event["new"] == "/dev/vdb" and event["old"] is None
    assert event["at"]


async def _next_event(resp: aiohttp.ClientResponse, disk_id: str) -> dict[str, Any]:
    async for line in resp.content:
        if line.startswith(b"data: "):
            event: dict[str, Any] = orjson.loads(line[6:])
            if event.get("disk_id") == disk_id:  # (guest_agent events name a VM only)
                return event
    raise AssertionError("stream ended")


BAD_JSON = b"{not json"
# (method, path, body (bytes are sent raw), status): every way a client can be wrong.
# {vm} is a VM with a root disk {root}, {host} its host, {missing} an id nothing has.
ERROR_CASES: list[tuple[str, str, Any, int]] = [
    # bad JSON, or JSON that is no object
    ("POST", "/api/hosts", BAD_JSON, 400),
    ("POST", "/api/hosts", b"", 400),
    ("POST", "/api/hosts", b"[1, 2]", 400),
    ("POST", "/api/vms", BAD_JSON, 400),
    ("POST", "/api/vms/{vm}/diskattachments", BAD_JSON, 400),
    ("PUT", "/api/vms/{vm}/diskattachments/{root}", b"\xff\xfe", 400),
    # missing fields
    ("POST", "/api/hosts", {"name": "x", "address": "a"}, 400),
    ("POST", "/api/vms", {"name": "v"}, 400),
    ("POST", "/api/vms", {"host": {"id": "{host}"}}, 400),
    ("POST", "/api/vms", {"name": "v", "host": {}}, 400),
    ("POST", "/api/vms/{vm}/diskattachments", {"active": True}, 400),
    ("PUT", "/api/vms/{vm}/diskattachments/{root}", {}, 400),
    # wrong types and values
    ("POST", "/api/hosts", {"name": "x", "address": "a", "port": "80"}, 400),
    ("POST", "/api/hosts", {"name": "x", "address": "a", "port": True}, 400),
    ("POST", "/api/hosts", {"name": "x", "address": "a", "port": 0}, 400),
    ("POST", "/api/hosts", {"name": " ", "address": "a", "port": 80}, 400),
    ("POST", "/api/hosts", {"name": 5, "address": "a", "port": 80}, 400),
    # names with control, bidi or zero-width characters (SPEC §19)
    ("POST", "/api/vms", {"name": "\x1b[31mv", "host": {"id": "{host}"}}, 400),
    ("POST", "/api/vms", {"name": "v\u202e", "host": {"id": "{host}"}}, 400),
    ("POST", "/api/vms", {"name": "v\u200b", "host": {"id": "{host}"}}, 400),
    ("POST", "/api/hosts", {"name": "\u2066x", "address": "a", "port": 80}, 400),
    ("DELETE", "/api/vms/{vm}?force=yes", None, 400),
    ("POST", "/api/vms", {"name": "v", "host": "{host}"}, 400),
    ("POST", "/api/vms/{vm}/diskattachments", {"interface": 1}, 400),
    ("POST", "/api/vms/{vm}/diskattachments", {"interface": "virtio", "active": "yes"}, 400),
    ("POST", "/api/vms/{vm}/diskattachments", {"interface": "virtio", "disk": "x"}, 400),
    ("PUT", "/api/vms/{vm}/diskattachments/{root}", {"active": 1}, 400),
    # wrong interface
    ("POST", "/api/vms/{vm}/diskattachments", {"interface": "ide"}, 400),
    ("POST", "/api/vms/{vm}/diskattachments", {"interface": "VIRTIO"}, 400),
    # bad UUIDs
    ("GET", "/api/vms/not-a-uuid", None, 400),
    ("DELETE", "/api/vms/not-a-uuid", None, 400),
    ("GET", "/api/hosts/not-a-uuid", None, 400),
    ("GET", "/api/vms/not-a-uuid/diskattachments", None, 400),
    ("GET", "/api/vms/{vm}/diskattachments/not-a-uuid", None, 400),
    ("PUT", "/api/vms/{vm}/diskattachments/not-a-uuid", {"active": False}, 400),
    ("POST", "/api/vms", {"name": "v", "host": {"id": "nope"}}, 400),
    ("POST", "/api/vms/{vm}/diskattachments", {"interface": "virtio", "disk": {"id": "x"}}, 400),
    # unknown host
    ("GET", "/api/hosts/{missing}", None, 404),
    ("POST", "/api/vms", {"name": "v", "host": {"id": "{missing}"}}, 422),
    # unknown VM, disk or attachment
    ("GET", "/api/vms/{missing}", None, 404),
    ("DELETE", "/api/vms/{missing}", None, 404),
    ("GET", "/api/vms/{missing}/diskattachments", None, 404),
    ("POST", "/api/vms/{missing}/diskattachments", {"interface": "virtio"}, 404),
    ("GET", "/api/vms/{missing}/diskattachments/{root}", None, 404),
    ("GET", "/api/vms/{vm}/diskattachments/{missing}", None, 404),
    ("PUT", "/api/vms/{vm}/diskattachments/{missing}", {"active": False}, 404),
    ("DELETE", "/api/vms/{vm}/diskattachments/{missing}", None, 404),
    (
        "POST",
        "/api/vms/{vm}/diskattachments",
        {"interface": "virtio", "disk": {"id": "{missing}"}},
        422,
    ),
    # taken names and ids
    ("POST", "/api/hosts", {"name": "h1", "address": "a", "port": 1}, 409),
    ("POST", "/api/hosts", {"id": "{host}", "name": "h2", "address": "a", "port": 1}, 409),
    ("POST", "/api/vms", {"id": "{vm}", "name": "v", "host": {"id": "{host}"}}, 409),
    (
        "POST",
        "/api/vms/{vm}/diskattachments",
        {"interface": "virtio", "disk": {"id": "{root}"}},
        409,
    ),
    # no such route or method
    ("GET", "/api/nothing-here", None, 404),
    ("PATCH", "/api/hosts", {}, 405),
    ("PUT", "/api/vms", {}, 405),
]


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    return value


async def test_every_bad_request_is_a_json_4xx(api: Api) -> None:
    vm_id = await api.vm()
    host_id = (await api.call("GET", "/api/hosts"))["host"][0]["id"]
    root = (await api.call("GET", f"/api/vms/{vm_id}/diskattachments"))["disk_attachment"][0]
    names = {"vm": vm_id, "host": host_id, "root": root["id"], "missing": str(uuid.uuid4())}
    failures = []
    for method, path, body, status in ERROR_CASES:
        url = api.base + path.format(**names)
        data = (
            body
            if isinstance(body, bytes)
            else None
            if body is None
            else orjson.dumps(_fill(body, names))
        )
        headers = {"Content-Type": "application/json"}
        async with api.http.request(method, url, data=data, headers=headers) as resp:
            payload = await resp.read()
            try:
                answer = orjson.loads(payload)
                shaped = set(answer) == {"error"} and answer["error"]["code"] == status
                shaped = shaped and isinstance(answer["error"]["message"], str)
            except (orjson.JSONDecodeError, TypeError, KeyError):
                shaped = False
            if resp.status != status or resp.content_type != "application/json" or not shaped:
                failures.append((method, path, body, status, resp.status, payload[:200]))
    assert failures == []
    # Nothing was left behind by the refused requests.
    assert len((await api.call("GET", "/api/vms"))["vm"]) == 1
    assert len((await api.call("GET", f"/api/vms/{vm_id}/diskattachments"))["disk_attachment"]) == 1


async def test_host_failures_are_502_and_leave_nothing_behind(api: Api) -> None:
    vm_id = await api.vm()
    base = f"/api/vms/{vm_id}/diskattachments"
    api.fake.fail["VM.hotplugDisk"] = Code.HYPERVISOR_ERROR
    await api.error("POST", base, 502, {"interface": "virtio"})
    assert len((await api.call("GET", base))["disk_attachment"]) == 1
    api.fake.fail["VM.create"] = Code.HYPERVISOR_ERROR
    host_id = (await api.call("GET", "/api/hosts"))["host"][0]["id"]
    await api.error("POST", "/api/vms", 502, {"name": "v2", "host": {"id": host_id}})
    assert len((await api.call("GET", "/api/vms"))["vm"]) == 1
    api.fake.fail["VM.hotplugDisk"] = Code.CONFLICT
    await api.error("POST", base, 409, {"interface": "virtio"})


async def test_a_host_call_that_times_out_says_so(pg_dsn: str) -> None:
    async with engine(pg_dsn, action_timeout=0.5) as api:
        vm_id = await api.vm()
        api.fake.silent.add("VM.hotplugDisk")
        message = await api.error(
            "POST", f"/api/vms/{vm_id}/diskattachments", 504, {"interface": "virtio"}
        )
        assert message == "host h1: VM.hotplugDisk got no answer within 0.5 s"
        # The connection is fine: polls and other calls go on.
        polls = api.engine.metrics.polls
        await wait_until(lambda: api.engine.metrics.polls > polls + 2)
        api.fake.silent.clear()
        await api.call(
            "POST", f"/api/vms/{vm_id}/diskattachments", {"interface": "virtio"}, status=201
        )


async def test_a_host_that_is_down_is_a_409_not_a_server_error(api: Api) -> None:
    vm_id = await api.vm()
    await api.fake.close()

    async def down() -> bool:
        return bool((await api.call("GET", "/api/hosts"))["host"][0]["status"] == "unreachable")

    await wait_until(down)
    message = await api.error(
        "POST", f"/api/vms/{vm_id}/diskattachments", 409, {"interface": "virtio"}
    )
    assert "h1 is not connected" in message


async def test_token_is_required_on_every_api_route(pg_dsn: str) -> None:
    async with engine(pg_dsn, token=TOKEN) as api:
        assert (await api.call("GET", "/api/hosts", status=200)) == {"host": []}
        routes = _routes()
        assert len([r for r in routes if r[1].startswith("/api/")]) >= 14
        missing = str(uuid.uuid4())
        async with aiohttp.ClientSession() as anonymous:
            for method, path in routes:
                url = api.base + path.replace("{vm_id}", missing).replace("{disk_id}", missing)
                url = url.replace("{host_id}", missing)
                for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                    async with anonymous.request(method, url, headers=headers, json={}) as resp:
                        if not is_protected(path):  # the page, health, metrics, SSO
                            assert resp.status not in (401, 500), (method, path, resp.status)
                            continue
                        assert resp.status == 401, (method, path, headers, resp.status)
                        if is_ovirt_api(path):  # oVirt's XML API answers a <fault>
                            assert b"<fault>" in await resp.read()
                        else:
                            assert (await resp.json())["error"]["code"] == 401
            url = f"{api.base}/api/events?access_token={TOKEN}"
            async with anonymous.get(url) as resp:
                assert resp.status == 200
            async with anonymous.get(f"{api.base}/api/events?access_token=wrong") as resp:
                assert resp.status == 401


def _routes() -> list[tuple[str, str]]:
    """(method, path) of every route the engine's aiohttp application serves."""
    app = make_app(cast(EngineContext, None))
    return sorted(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    )


async def test_openapi_document_covers_every_route(api: Api) -> None:
    doc = await api.call("GET", "/api/openapi.json", status=200)
    assert doc["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in {"get", "post", "put", "delete", "patch"}
    }
    # The document describes the JSON API; oVirt's XML API is oVirt's own (SPEC §14).
    assert {r for r in _routes() if not is_ovirt_api(r[1])} == documented
    # Every $ref resolves, every operation documents its answers.
    text = orjson.dumps(doc).decode()
    for ref in set(re.findall(r'"\$ref":"#/components/(\w+)/(\w+)"', text)):
        assert ref[1] in doc["components"][ref[0]], ref
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method != "parameters":
                assert op["responses"], (method, path)


async def test_engine_stops_promptly_with_an_event_stream_open(pg_dsn: str) -> None:
    async with engine(pg_dsn) as api, api.http.get(api.base + "/api/events") as resp:
        assert (await resp.content.readline()).startswith(b":")
        api.task.cancel()
        done, _ = await asyncio.wait([api.task], timeout=10)
        assert done, "the engine did not stop"
        await asyncio.wait_for(resp.content.read(), 5)  # the stream was ended, not cut


async def test_healthz_is_503_without_a_database(pg_dsn: str) -> None:
    metrics, hub = Metrics(), EventHub()
    store = await Store.open(pg_dsn, metrics)
    await store.close()
    config = EngineConfig(dsn=pg_dsn)
    monitors = Monitors(store, metrics, hub, config, pg_dsn)
    actions = Actions(store, monitors, metrics, hub)
    auth = Authenticator(config, UserStore(store.pool), metrics)
    ctx = EngineContext(config, store, monitors, metrics, hub, actions, auth)
    runner = web.AppRunner(make_app(ctx))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as resp,
        ):
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == 503
    finally:
        await runner.cleanup()


async def test_vm_can_be_created_right_after_its_host_is_registered(api: Api) -> None:
    host = await api.call(
        "POST", "/api/hosts", {"name": "h1", "address": "127.0.0.1", "port": api.fake.port}
    )
    vm = await api.call("POST", "/api/vms", {"name": "v", "host": {"id": host["id"]}}, status=201)
    assert vm["id"] in api.fake.vms


async def test_shutdown_runs_in_order(pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    """STYLE.md: stop accepting, let connections finish, stop the monitors, close the pool."""
    caplog.set_level("INFO", logger="diskname.engine.service")
    async with engine(pg_dsn) as api:
        await api.vm()
        port = api.engine.http_port
        api.task.cancel()
        await asyncio.wait([api.task], timeout=10)
        assert api.task.done()
    steps = [r.getMessage() for r in caplog.records if "engine stopping" in r.getMessage()]
    assert steps == [
        "engine stopping: HTTP closed",
        "engine stopping: host monitors stopped",
        "engine stopping: database pool closed",
    ]
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)
