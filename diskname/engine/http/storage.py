"""``/api/storagedomains`` and floating disks: ``POST /api/disks``, ``DELETE /api/disks/{id}``
(SPEC §18)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.models import DISK_NAME_MAX, DiskSpec, canonical_uuid
from ..core.search import FIELDS, parse_search
from ..errors import Invalid
from . import parsing as p
from .context import actions
from .responses import json_response

FORMATS = ("cow", "raw")


async def list_domains(request: web.Request) -> web.Response:
    """Every host's domains (``search=name=...`` as oVirt's)."""
    search = parse_search(request.query.get("search"), FIELDS["storagedomains"])
    domains = await actions(request).storage_domains(search)
    return json_response({"storage_domain": [d.to_json() for d in domains]})


async def get_domain(request: web.Request) -> web.Response:
    domain = await actions(request).storage_domain(p.path_uuid(request, "domain_id"))
    return json_response(domain.to_json())


async def create_disk(request: web.Request) -> web.Response:
    """A floating disk: 201 with status "locked" until its image exists."""
    disk = await actions(request).create_disk(disk_request(await p.body(request)))
    response = json_response(disk.to_json(), status=201)
    response.headers["Location"] = f"/api/disks/{disk.id}"
    return response


async def delete_disk(request: web.Request) -> web.Response:
    await actions(request).delete_disk(p.path_uuid(request, "disk_id"))
    return web.Response(status=204)


def disk_request(body: dict[str, Any]) -> DiskSpec:
    """``{"name", "provisioned_size", "format"?, "sparse"?, "storage_domains": [{id|name}]}``."""
    name = p.text(body, "name", p.NAME_PATTERN, DISK_NAME_MAX)
    size = p.field(body, "provisioned_size", int)
    fmt = p.field(body, "format", str, required=False) or "cow"
    if fmt not in FORMATS:
        raise Invalid(f"format must be one of {list(FORMATS)}, not {fmt[:40]!r}")
    sparse = p.field(body, "sparse", bool, required=False)
    domains = p.field(body, "storage_domains", list)
    if len(domains) != 1 or not isinstance(domains[0], dict):
        raise Invalid('storage_domains must hold one domain: {"id": ...} or {"name": ...}')
    ref = domains[0]
    if "id" in ref:
        domain = canonical_uuid(p.uuid_text(ref["id"], "storage_domains[0].id"))
    else:
        domain = p.text(ref, "name", p.NAME_PATTERN, p.NAME_MAX) or ""
    assert name is not None
    return DiskSpec(
        name,
        size,
        storage_domain=domain,
        format=fmt,
        sparse=(fmt == "cow") if sparse is None else sparse,
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/api/storagedomains", list_domains),
        web.get("/api/storagedomains/{domain_id}", get_domain),
        web.post("/api/disks", create_disk),
        web.delete("/api/disks/{disk_id}", delete_disk),
    ]
