"""``/api/vms/{vm_id}/diskattachments``: attach, plug, unplug and detach disks (SPEC §7)."""

from __future__ import annotations

import time

from aiohttp import web

from ..core.waiting import wait_timeout
from . import parsing as p
from .context import actions
from .responses import json_response


async def list_attachments(request: web.Request) -> web.Response:
    atts = await actions(request).attachments(p.path_uuid(request, "vm_id"))
    return json_response({"disk_attachment": [a.to_json() for a in atts]})


async def get_attachment(request: web.Request) -> web.Response:
    """One attachment; with ``?wait=logical_name`` once it is named (or at ``timeout``)."""
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    wait = wait_timeout(request.query.get("wait"), request.query.get("timeout"))
    if wait is None:
        att = await actions(request).attachment(vm_id, disk_id)
    else:
        att = await actions(request).attachment_named(vm_id, disk_id, wait)
    return json_response(att.to_json())


async def add_attachment(request: web.Request) -> web.Response:
    requested_at = time.monotonic()
    vm_id = p.path_uuid(request, "vm_id")
    attach = p.attach_request(await p.body(request))
    att = await actions(request).attach(vm_id, attach, requested_at)
    return json_response(att.to_json(), 201)


async def update_attachment(request: web.Request) -> web.Response:
    requested_at = time.monotonic()
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    active = p.field(await p.body(request), "active", bool)
    att = await actions(request).set_active(vm_id, disk_id, active, requested_at)
    return json_response(att.to_json())


async def delete_attachment(request: web.Request) -> web.Response:
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    await actions(request).detach(vm_id, disk_id, force=p.query_flag(request, "force"))
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    atts = "/api/vms/{vm_id}/diskattachments"
    return [
        web.get(atts, list_attachments),
        web.post(atts, add_attachment),
        web.get(atts + "/{disk_id}", get_attachment),
        web.put(atts + "/{disk_id}", update_attachment),
        web.delete(atts + "/{disk_id}", delete_attachment),
    ]
