"""Routes for clusters, a disk's name history and disks by serial (SPEC §7)."""

from __future__ import annotations

from aiohttp import web

from ..core.planning import compat_keeps_names
from ..db.catalog import ClusterRow, DiskRow
from . import parsing as p
from .context import actions
from .responses import json_list_response, json_response

HISTORY_DEFAULT = 100
HISTORY_MAX = 1000


def _cluster_json(cluster: ClusterRow) -> dict[str, object]:
    return cluster.to_json(compat_keeps_names(cluster.compatibility_version))


async def list_clusters(request: web.Request) -> web.Response:
    clusters = await actions(request).clusters()
    return json_response({"cluster": [_cluster_json(c) for c in clusters]})


async def get_cluster(request: web.Request) -> web.Response:
    cluster = await actions(request).cluster(p.path_uuid(request, "cluster_id"))
    return json_response(_cluster_json(cluster))


async def update_cluster(request: web.Request) -> web.Response:
    """Rename or re-version a cluster; a new version applies within one refresh."""
    cluster_id = p.path_uuid(request, "cluster_id")
    body = await p.body(request)
    name = p.text(body, "name", p.NAME_PATTERN, p.NAME_MAX, required=False)
    version = p.text(body, "compatibility_version", p.VERSION_PATTERN, 7, required=False)
    cluster = await actions(request).update_cluster(cluster_id, name, version)
    return json_response(_cluster_json(cluster))


async def history(request: web.Request) -> web.Response:
    """The attachment's names, newest first (as long as the disk is attached)."""
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    limit = p.query_int(request, "max", HISTORY_DEFAULT, 1, HISTORY_MAX)
    changes = await actions(request).history(vm_id, disk_id, limit)
    return json_response({"history": [c.history_json() for c in changes]})


async def vm_history(request: web.Request) -> web.Response:
    """The VM's names, newest first: which disk had ``logical_name`` (a former name),
    or one disk's names (``disk_id``), whether the disk is still attached or not."""
    vm_id = p.path_uuid(request, "vm_id")
    query = dict(request.query)
    name = p.text(query, "logical_name", p.NAME_PATTERN, p.NAME_MAX, required=False)
    disk_id = query.get("disk_id")
    limit = p.query_int(request, "max", HISTORY_DEFAULT, 1, HISTORY_MAX)
    changes = await actions(request).vm_history(
        vm_id, name, None if disk_id is None else p.uuid_text(disk_id, "disk_id"), limit
    )
    entries = [{**c.history_json(), "disk": {"id": c.disk_id}} for c in changes]
    return json_response({"history": entries})


async def list_disks(request: web.Request) -> web.Response:
    """Disks by id or by the serial a guest shows (bare, prefixed, padded or cut short)."""
    disk_id = request.query.get("id")
    serial = p.text(dict(request.query), "serial", p.NAME_PATTERN, p.NAME_MAX, required=False)
    if serial is not None:
        serial = "".join(serial.split())  # padding is no part of a serial
    disks = await actions(request).disk_uses(
        disk_id=None if disk_id is None else p.uuid_text(disk_id, "id"), serial=serial
    )
    return json_list_response("disk", disks, DiskRow.to_json)


def routes() -> list[web.RouteDef]:
    cluster = "/api/clusters/{cluster_id}"
    return [
        web.get("/api/clusters", list_clusters),
        web.get(cluster, get_cluster),
        web.put(cluster, update_cluster),
        web.get("/api/vms/{vm_id}/diskattachments/{disk_id}/history", history),
        web.get("/api/vms/{vm_id}/history", vm_history),
        web.get("/api/disks", list_disks),
    ]
