"""Routes for clusters, name history, disks by serial and host removal (SPEC §7)."""

from __future__ import annotations

import logging

from aiohttp import web

from ..core.planning import compat_keeps_names
from . import parsing as p
from .context import CTX

log = logging.getLogger(__name__)

HISTORY_DEFAULT = 100
HISTORY_MAX = 1000


async def list_clusters(request: web.Request) -> web.Response:
    clusters = await request.app[CTX].catalog.clusters()
    return p.json_response(
        {"cluster": [c.to_json(compat_keeps_names(c.compatibility_version)) for c in clusters]}
    )


async def get_cluster(request: web.Request) -> web.Response:
    cluster = await request.app[CTX].catalog.cluster(p.path_uuid(request, "cluster_id"))
    return p.json_response(cluster.to_json(compat_keeps_names(cluster.compatibility_version)))


async def update_cluster(request: web.Request) -> web.Response:
    """Rename or re-version a cluster; a new version applies within one refresh.

    Names are kept only from 3.5 on (SPEC §6): the cluster's VMs are fetched and
    stored again, so raising the version names their disks and lowering it drops
    the names, although the hosts report nothing new.
    """
    ctx, cluster_id = request.app[CTX], p.path_uuid(request, "cluster_id")
    body = await p.body(request)
    name = p.text(body, "name", p.NAME_PATTERN, p.NAME_MAX, required=False)
    version = p.text(body, "compatibility_version", p.VERSION_PATTERN, 7, required=False)
    before = await ctx.catalog.cluster(cluster_id)
    cluster, host_ids = await ctx.catalog.update_cluster(cluster_id, name, version)
    if cluster.compatibility_version != before.compatibility_version:
        log.info(
            "cluster %s: compatibility version %s -> %s, fetching its VMs again",
            cluster.name,
            before.compatibility_version,
            cluster.compatibility_version,
        )
        await ctx.monitors.refetch_hosts(host_ids)
    return p.json_response(cluster.to_json(compat_keeps_names(cluster.compatibility_version)))


async def delete_host(request: web.Request) -> web.Response:
    ctx, host_id = request.app[CTX], p.path_uuid(request, "host_id")
    await ctx.catalog.delete_host(host_id)
    ctx.monitors.remove(host_id)
    return web.Response(status=204)


async def history(request: web.Request) -> web.Response:
    """The attachment's names, newest first (as long as the disk is attached)."""
    ctx = request.app[CTX]
    vm_id, disk_id = p.path_uuid(request, "vm_id"), p.path_uuid(request, "disk_id")
    limit = p.query_int(request, "max", HISTORY_DEFAULT, 1, HISTORY_MAX)
    await ctx.actions.attachment((await ctx.actions.vm(vm_id)).id, disk_id)
    changes = await ctx.catalog.history(vm_id, disk_id, limit)
    return p.json_response({"history": [c.history_json() for c in changes]})


async def list_disks(request: web.Request) -> web.Response:
    """Disks by id or by the serial a guest shows (bare, prefixed, padded or cut short)."""
    disk_id = request.query.get("id")
    serial = p.text(dict(request.query), "serial", p.NAME_PATTERN, p.NAME_MAX, required=False)
    if serial is not None:
        serial = "".join(serial.split())  # padding is no part of a serial
    disks = await request.app[CTX].catalog.disks(
        disk_id=None if disk_id is None else p.uuid_text(disk_id, "id"), serial=serial
    )
    return p.json_response({"disk": [d.to_json() for d in disks]})


def routes() -> list[web.RouteDef]:
    cluster = "/api/clusters/{cluster_id}"
    return [
        web.get("/api/clusters", list_clusters),
        web.get(cluster, get_cluster),
        web.put(cluster, update_cluster),
        web.delete("/api/hosts/{host_id}", delete_host),
        web.get("/api/vms/{vm_id}/diskattachments/{disk_id}/history", history),
        web.get("/api/disks", list_disks),
    ]
