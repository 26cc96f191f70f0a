"""``/api/vms``: list, create, look up and destroy VMs (SPEC §7)."""

from __future__ import annotations

from aiohttp import web

from ..core.models import VmRow
from . import parsing as p
from .context import actions
from .responses import json_list_response, json_response


async def list_vms(request: web.Request) -> web.Response:
    vms = await actions(request).vms()
    return json_list_response("vm", vms, VmRow.to_json)


async def get_vm(request: web.Request) -> web.Response:
    vm = await actions(request).vm(p.path_uuid(request, "vm_id"))
    return json_response(vm.to_json())


async def add_vm(request: web.Request) -> web.Response:
    body = await p.body(request)
    name = p.text(body, "name", p.NAME_PATTERN, p.NAME_MAX) or ""
    host_id = p.ref_id(body, "host", required=True) or ""
    vm_id = p.optional_uuid(body, "id")
    vm = await actions(request).create_vm(name, host_id, vm_id)
    return json_response(vm.to_json(), 201)


async def delete_vm(request: web.Request) -> web.Response:
    vm_id = p.path_uuid(request, "vm_id")
    await actions(request).destroy_vm(vm_id, force=p.query_flag(request, "force"))
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    vm = "/api/vms/{vm_id}"
    return [
        web.get("/api/vms", list_vms),
        web.post("/api/vms", add_vm),
        web.get(vm, get_vm),
        web.delete(vm, delete_vm),
    ]
