"""The REST API (SPEC §7), server-sent events, metrics and the web page (aiohttp).

Every error, aiohttp's own included, leaves as ``{"error": {"code", "message"}}``,
or as a ``<fault>`` on oVirt's XML API (:mod:`..ovirt`, mounted here too).
"""

from __future__ import annotations

import logging
import time
import uuid
from importlib import resources
from typing import Any

from aiohttp import web

from .. import ovirt
from ..actions.resources import AttachRequest, Resources
from ..core.models import DEFAULT_DISK_SIZE, DISK_NAME_MAX, DiskSpec
from ..db.store import UNAVAILABLE
from ..errors import EngineError, Invalid, http_headers, http_status
from ..ovirt import sso
from . import auth, sse
from . import catalog_routes as catalog_api
from . import parsing as p
from .context import CTX, EngineContext
from .parsing import error_response, json_response

__all__ = ["CTX", "EngineContext", "make_app"]

log = logging.getLogger(__name__)


@web.middleware
async def errors_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except EngineError as exc:
        return _error(request, http_status(exc), str(exc), http_headers(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        # Keep what the status needs (RFC 9110: a 405 lists the methods in Allow).
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return _error(request, exc.status, exc.reason, allow)
    except UNAVAILABLE as exc:
        log.info("%s %s: database unavailable: %s", request.method, request.path, exc)
        return _error(request, 503, "database unavailable, try again")
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return _error(request, 500, "internal error")


def _error(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The error in the caller's dialect: a ``<fault>`` on oVirt's XML API, else JSON."""
    if ovirt.is_ovirt_api(request.path):
        return ovirt.fault_response(status, message, headers)
    response = error_response(status, message)
    response.headers.update(headers or {})
    return response


# -- handlers --------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    if await request.app[CTX].store.ping():
        return json_response({"status": "ok"})
    return error_response(503, "database unreachable")


def _res(request: web.Request) -> Resources:
    return request.app[CTX].resources


async def list_hosts(request: web.Request) -> web.Response:
    hosts = await _res(request).hosts()
    return json_response({"host": [h.to_json() for h in hosts]})


async def get_host(request: web.Request) -> web.Response:
    host = await _res(request).host(p.path_uuid(request, "host_id"))
    return json_response(host.to_json())


async def add_host(request: web.Request) -> web.Response:
    body = await p.body(request)
    name = p.text(body, "name", p.NAME_PATTERN, p.NAME_MAX) or ""
    address = p.text(body, "address", p.ADDRESS_PATTERN, p.ADDRESS_MAX) or ""
    port = p.field(body, "port", int)
    if not 1 <= port <= 65535:
        raise Invalid("port must be between 1 and 65535")
    host_id = p.optional_uuid(body, "id") or str(uuid.uuid4())
    token = p.text(body, "token", p.NAME_PATTERN, p.TOKEN_MAX, required=False)
    host = await _res(request).add_host(host_id, name, address, port, token)
    return json_response(host.to_json(), 201)


async def list_vms(request: web.Request) -> web.Response:
    vms = await _res(request).vms()
    return json_response({"vm": [vm.to_json() for vm in vms]})


async def get_vm(request: web.Request) -> web.Response:
    vm = await _res(request).vm(p.path_uuid(request, "vm_id"))
    return json_response(vm.to_json())


async def add_vm(request: web.Request) -> web.Response:
    body = await p.body(request)
    name = p.text(body, "name", p.NAME_PATTERN, p.NAME_MAX) or ""
    host_id = p.ref_id(body, "host", required=True) or ""
    vm_id = p.optional_uuid(body, "id")
    vm = await _res(request).create_vm(name, host_id, vm_id)
    return json_response(vm.to_json(), 201)


async def delete_vm(request: web.Request) -> web.Response:
    await _res(request).destroy_vm(p.path_uuid(request, "vm_id"))
    return web.Response(status=204)


async def list_attachments(request: web.Request) -> web.Response:
    atts = await _res(request).attachments(p.path_uuid(request, "vm_id"))
    return json_response({"disk_attachment": [a.to_json() for a in atts]})


async def get_attachment(request: web.Request) -> web.Response:
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    return json_response((await _res(request).attachment(vm_id, disk_id)).to_json())


async def add_attachment(request: web.Request) -> web.Response:
    requested_at = time.monotonic()
    vm_id = p.path_uuid(request, "vm_id")
    body = await p.body(request)
    active = p.field(body, "active", bool, required=False)
    attach = AttachRequest(
        interface=p.field(body, "interface", str),
        active=True if active is None else active,
        disk_id=p.ref_id(body, "disk", required=False),
        new_disk=_new_disk(body),
        lun_serial=_lun_serial(body),
    )
    att = await _res(request).attach(vm_id, attach, requested_at)
    return json_response(att.to_json(), 201)


def _new_disk(body: dict[str, Any]) -> DiskSpec | None:
    """The name and size in ``{"disk": {"name", "provisioned_size"}}``, if any."""
    disk = p.field(body, "disk", dict, required=False) or {}
    name = p.text(disk, "name", p.NAME_PATTERN, DISK_NAME_MAX, required=False)
    size = p.field(disk, "provisioned_size", int, required=False)
    if name is None and size is None:
        return None
    if name is None:
        raise Invalid("a new disk with a provisioned_size needs a name too")
    return DiskSpec(name, DEFAULT_DISK_SIZE if size is None else size)


def _lun_serial(body: dict[str, Any]) -> str | None:
    """The serial in ``{"disk": {"lun_storage": {"serial"}}}``: a new direct-LUN disk."""
    disk = body.get("disk")
    if not isinstance(disk, dict) or "lun_storage" not in disk:
        return None
    lun = p.field(disk, "lun_storage", dict)
    return p.text(lun, "serial", p.LUN_SERIAL_PATTERN, p.LUN_SERIAL_MAX)


async def update_attachment(request: web.Request) -> web.Response:
    requested_at = time.monotonic()
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    active = p.field(await p.body(request), "active", bool)
    att = await _res(request).set_active(vm_id, disk_id, active, requested_at)
    return json_response(att.to_json())


async def delete_attachment(request: web.Request) -> web.Response:
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    await _res(request).detach(vm_id, disk_id)
    return web.Response(status=204)


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
            web.get("/api/events", sse.events),
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
            *catalog_api.routes(),
            *sso.routes(_auth),
            *ovirt.routes(_res),
        ]
    )
    return app
