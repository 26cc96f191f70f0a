"""``/api/hosts``: list, register, look up and forget hosts (SPEC §7)."""

from __future__ import annotations

import uuid

from aiohttp import web

from ..errors import Invalid
from . import parsing as p
from .context import actions
from .responses import json_response


async def list_hosts(request: web.Request) -> web.Response:
    hosts = await actions(request).hosts()
    return json_response({"host": [h.to_json() for h in hosts]})


async def get_host(request: web.Request) -> web.Response:
    host = await actions(request).host(p.path_uuid(request, "host_id"))
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
    host = await actions(request).add_host(host_id, name, address, port, token)
    return json_response(host.to_json(), 201)


async def delete_host(request: web.Request) -> web.Response:
    host_id = p.path_uuid(request, "host_id")
    await actions(request).delete_host(host_id, force=p.query_flag(request, "force"))
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/hosts", list_hosts),
        web.post("/api/hosts", add_host),
        web.get("/api/hosts/{host_id}", get_host),
        web.delete("/api/hosts/{host_id}", delete_host),
    ]
