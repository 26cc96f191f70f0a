"""The REST API (SPEC §7), server-sent events, metrics and the web page (aiohttp).

Every error, aiohttp's own included, leaves as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from . import auth, sso
from .actions import INTERFACES, Actions
from .config import EngineConfig
from .errors import EngineError, Invalid, NotFound, http_headers, http_status
from .events import EventHub
from .metrics import Metrics
from .models import canonical_uuid
from .monitors import Monitors
from .store import UNAVAILABLE, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineContext:
    config: EngineConfig
    store: Store
    monitors: Monitors
    metrics: Metrics
    hub: EventHub
    actions: Actions
    auth: auth.Authenticator


CTX = web.AppKey("diskname_engine", EngineContext)


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response({"error": {"code": status, "message": message}}, status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except EngineError as exc:
        response = error_response(http_status(exc), str(exc))
        response.headers.update(http_headers(exc))
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.status, exc.reason)
    except UNAVAILABLE as exc:
        log.info("%s %s: database unavailable: %s", request.method, request.path, exc)
        return error_response(503, "database unavailable, try again")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error")


# -- request parsing -----------------------------------------------------------


def _path_uuid(request: web.Request, name: str) -> str:
    try:
        return canonical_uuid(request.match_info[name])
    except ValueError:
        raise Invalid(f"{name} is not a UUID") from None


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Invalid("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    return body


def _field(body: dict[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise Invalid(f"missing field {name!r}")
        return None
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Invalid(f"field {name!r} must be a {kind.__name__}")
    if isinstance(value, str) and not value.strip():
        raise Invalid(f"field {name!r} must not be empty")
    return value


def _optional_uuid(value: Any, what: str) -> str | None:
    if value is None:
        return None
    try:
        return canonical_uuid(value)
    except ValueError:
        raise Invalid(f"{what} is not a UUID") from None


def _ref_id(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    """The ``id`` inside a reference such as ``{"host": {"id": ...}}``."""
    ref = _field(body, name, dict, required=required)
    ref_id = _optional_uuid(ref.get("id") if ref else None, f"{name}.id")
    if ref_id is None and required:
        raise Invalid(f"missing field {name}.id")
    return ref_id


# -- handlers --------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    if await request.app[CTX].store.ping():
        return json_response({"status": "ok"})
    return error_response(503, "database unreachable")


async def list_hosts(request: web.Request) -> web.Response:
    hosts = await request.app[CTX].store.list_hosts()
    return json_response({"host": [h.to_json() for h in hosts]})


async def get_host(request: web.Request) -> web.Response:
    host_id = _path_uuid(request, "host_id")
    host = await request.app[CTX].store.get_host(host_id)
    if host is None:
        raise NotFound(f"no host {host_id}")
    return json_response(host.to_json())


async def add_host(request: web.Request) -> web.Response:
    ctx, body = request.app[CTX], await _body(request)
    name, address = _field(body, "name", str), _field(body, "address", str)
    port = _field(body, "port", int)
    if not 1 <= port <= 65535:
        raise Invalid("port must be between 1 and 65535")
    host_id = _optional_uuid(body.get("id"), "id") or str(uuid.uuid4())
    token = _field(body, "token", str, required=False)
    host = await ctx.store.add_host(host_id, name, address, port, token)
    await ctx.monitors.register(host)
    return json_response(host.to_json(), 201)


async def list_vms(request: web.Request) -> web.Response:
    vms = await request.app[CTX].store.list_vms()
    return json_response({"vm": [vm.to_json() for vm in vms]})


async def get_vm(request: web.Request) -> web.Response:
    vm = await request.app[CTX].actions.vm(_path_uuid(request, "vm_id"))
    return json_response(vm.to_json())


async def add_vm(request: web.Request) -> web.Response:
    body = await _body(request)
    name = _field(body, "name", str)
    host_id = _ref_id(body, "host", required=True) or ""
    vm_id = _optional_uuid(body.get("id"), "id")
    vm = await request.app[CTX].actions.create_vm(name, host_id, vm_id)
    return json_response(vm.to_json(), 201)


async def delete_vm(request: web.Request) -> web.Response:
    await request.app[CTX].actions.destroy_vm(_path_uuid(request, "vm_id"))
    return web.Response(status=204)


async def list_attachments(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    vm = await ctx.actions.vm(_path_uuid(request, "vm_id"))
    atts = await ctx.store.list_attachments(vm.id)
    return json_response({"disk_attachment": [a.to_json() for a in atts]})


async def get_attachment(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    vm = await ctx.actions.vm(_path_uuid(request, "vm_id"))
    att = await ctx.actions.attachment(vm.id, _path_uuid(request, "disk_id"))
    return json_response(att.to_json())


async def add_attachment(request: web.Request) -> web.Response:
    requested_at = time.monotonic()
    vm_id = _path_uuid(request, "vm_id")
    body = await _body(request)
    interface = _field(body, "interface", str)
    if interface not in INTERFACES:
        raise Invalid(f"interface must be one of {sorted(INTERFACES)}")
    active = _field(body, "active", bool, required=False)
    disk_id = _ref_id(body, "disk", required=False)
    att = await request.app[CTX].actions.add_attachment(
        vm_id, disk_id, interface, True if active is None else active, requested_at
    )
    return json_response(att.to_json(), 201)


async def update_attachment(request: web.Request) -> web.Response:
    requested_at = time.monotonic()
    vm_id, disk_id = _path_uuid(request, "vm_id"), _path_uuid(request, "disk_id")
    active = _field(await _body(request), "active", bool)
    att = await request.app[CTX].actions.set_active(vm_id, disk_id, active, requested_at)
    return json_response(att.to_json())


async def delete_attachment(request: web.Request) -> web.Response:
    vm_id, disk_id = _path_uuid(request, "vm_id"), _path_uuid(request, "disk_id")
    await request.app[CTX].actions.detach(vm_id, disk_id)
    return web.Response(status=204)


async def events(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    await response.write(b": connected\n\n")
    try:
        async for event in request.app[CTX].hub.subscribe():
            await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
    except ConnectionError:
        log.debug("event subscriber went away")
    return response


async def metrics(request: web.Request) -> web.Response:
    text = request.app[CTX].metrics.render()
    return web.Response(
        text=text,
        content_type="text/plain",
        charset="utf-8",
        headers={"X-Content-Format": "prometheus-0.0.4"},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_resource("openapi.json"), content_type="application/json")


def _resource(name: str) -> bytes:
    return resources.files(__package__).joinpath("web", name).read_bytes()


async def index(request: web.Request) -> web.Response:
    return web.Response(body=_resource("index.html"), content_type="text/html", charset="utf-8")


def _auth(request: web.Request) -> auth.Authenticator:
    return request.app[CTX].auth


async def _close_events(app: web.Application) -> None:
    app[CTX].hub.close()


def make_app(ctx: EngineContext) -> web.Application:
    app = web.Application(middlewares=[errors_middleware, auth.guard(_auth)])
    app[CTX] = ctx
    app.on_shutdown.append(_close_events)
    vm, att = "/api/vms/{vm_id}", "/api/vms/{vm_id}/diskattachments"
    app.add_routes(
        [
            web.get("/", index),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
            web.get("/api/events", events),
            web.get("/api/openapi.json", openapi),
            web.get("/api/hosts", list_hosts),
            web.post("/api/hosts", add_host),
            web.get("/api/hosts/{host_id}", get_host),
            web.get("/api/vms", list_vms),
            web.post("/api/vms", add_vm),
            web.get(vm, get_vm),
            web.delete(vm, delete_vm),
            web.get(att, list_attachments),
            web.post(att, add_attachment),
            web.get(att + "/{disk_id}", get_attachment),
            web.put(att + "/{disk_id}", update_attachment),
            web.delete(att + "/{disk_id}", delete_attachment),
            *sso.routes(_auth),
        ]
    )
    return app
