"""The ``/ovirt-engine/api`` routes (SPEC §14): oVirt's XML over the engine's resources.

Each handler parses the query and body (:mod:`.xmlin`), calls
:class:`~diskname.engine.actions.Actions` exactly as the JSON API does, and
writes the values it gets back (:mod:`.xmlout`). Who may call is decided
before (``engine/http/auth.py``'s guard covers this prefix, Content-Type included);
every error leaves as a ``<fault>`` through the API's one error middleware,
with the status of :data:`.faults.FAULTS`.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime

from aiohttp import web

from ..actions import Actions
from ..core.waiting import wait_timeout
from ..errors import Invalid
from . import query as q
from . import xmlin, xmlout
from .inventory import Inventory
from .xmlout import CONTENT_TYPE, PREFIX

GetActions = Callable[[web.Request], Actions]


def xml_response(
    element: ET.Element, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=xmlout.render(element),
        status=status,
        content_type=CONTENT_TYPE,
        charset="utf-8",
        headers=headers,
    )


# -- the handlers ----------------------------------------------------------------


class _Handlers:
    def __init__(self, get: GetActions) -> None:
        self._get = get

    def res(self, request: web.Request) -> Actions:
        q.check_version(request)
        return self._get(request)

    async def api(self, request: web.Request) -> web.Response:
        self.res(request)
        return xml_response(xmlout.api(datetime.now(UTC)))

    async def vms(self, request: web.Request) -> web.Response:
        res, follow = self.res(request), q.follow(request)
        rows = await res.vms(*q.listing(request, "vms"))
        atts = await res.attachments_of(rows) if follow else None
        disks = "disk_attachments.disk" in follow
        return xml_response(xmlout.vm_list(rows, atts, disks=disks))

    async def vm(self, request: web.Request) -> web.Response:
        res, follow = self.res(request), q.follow(request)
        row = await res.vm(q.path_id(request, "vm_id", "VM"))
        atts = await res.attachments(row.id) if follow else None
        disks = "disk_attachments.disk" in follow
        return xml_response(xmlout.vm(row, atts, disks=disks))

    async def attachments(self, request: web.Request) -> web.Response:
        vm_id = q.path_id(request, "vm_id", "VM")
        atts = await self.res(request).attachments(vm_id)
        return xml_response(xmlout.attachment_list(vm_id, atts))

    async def attachment(self, request: web.Request) -> web.Response:
        vm_id, disk_id = q.path_id(request, "vm_id", "VM"), q.path_id(request, "disk_id", "disk")
        res = self.res(request)
        wait = wait_timeout(request.query.get("wait"), request.query.get("timeout"))
        if wait is None:
            att = await res.attachment(vm_id, disk_id)
        else:  # SPEC §18: the same query as the JSON API's
            att = await res.attachment_named(vm_id, disk_id, wait)
        return xml_response(xmlout.attachment(att))

    async def attach(self, request: web.Request) -> web.Response:
        requested_at = time.monotonic()
        res, vm_id = self.res(request), q.path_id(request, "vm_id", "VM")
        att = await res.attach(vm_id, xmlin.attach_request(await request.read()), requested_at)
        href = xmlout.attachment_href(att.vm_id, att.disk_id)
        return xml_response(xmlout.attachment(att), 201, {"Location": href})

    async def update(self, request: web.Request) -> web.Response:
        requested_at = time.monotonic()
        res = self.res(request)
        vm_id, disk_id = q.path_id(request, "vm_id", "VM"), q.path_id(request, "disk_id", "disk")
        change = xmlin.attachment_update(await request.read())
        att = await res.attachment(vm_id, disk_id)
        if change.interface not in (None, att.interface):
            raise Invalid("an attached disk's interface cannot change: detach and attach it")
        if change.bootable or change.read_only:
            raise Invalid("bootable and read-only disks are not served")
        if change.active is not None:
            att = await res.set_active(vm_id, disk_id, change.active, requested_at)
        return xml_response(xmlout.attachment(att))

    async def detach(self, request: web.Request) -> web.Response:
        res = self.res(request)
        vm_id, disk_id = q.path_id(request, "vm_id", "VM"), q.path_id(request, "disk_id", "disk")
        remove = not q.flag(request, "detach_only", True)
        await res.detach(vm_id, disk_id, remove_disk=remove, force=q.flag(request, "force", False))
        return xml_response(xmlout.action_done())  # 200: the SDK takes a 204 for an error

    async def disks(self, request: web.Request) -> web.Response:
        rows = await self.res(request).disks(*q.listing(request, "disks"))
        return xml_response(xmlout.disk_list(rows))

    async def disk(self, request: web.Request) -> web.Response:
        row = await self.res(request).disk(q.path_id(request, "disk_id", "disk"))
        return xml_response(xmlout.disk(row))

    async def add_disk(self, request: web.Request) -> web.Response:
        """A floating disk, "locked" until its host made its image (oVirt's 201)."""
        row = await self.res(request).create_disk(xmlin.disk_request(await request.read()))
        headers = {"Location": xmlout.disk_href(row.id)}
        return xml_response(xmlout.disk(row), 201, headers)

    async def remove_disk(self, request: web.Request) -> web.Response:
        await self.res(request).delete_disk(q.path_id(request, "disk_id", "disk"))
        return xml_response(xmlout.action_done())


def routes(get: GetActions) -> list[web.RouteDef]:
    h = _Handlers(get)
    vm, atts = f"{PREFIX}/vms/{{vm_id}}", f"{PREFIX}/vms/{{vm_id}}/diskattachments"
    return [
        web.get(PREFIX, h.api),
        web.get(f"{PREFIX}/vms", h.vms),
        web.get(vm, h.vm),
        web.get(atts, h.attachments),
        web.post(atts, h.attach),
        web.get(atts + "/{disk_id}", h.attachment),
        web.put(atts + "/{disk_id}", h.update),
        web.delete(atts + "/{disk_id}", h.detach),
        web.get(f"{PREFIX}/disks", h.disks),
        web.post(f"{PREFIX}/disks", h.add_disk),
        web.get(f"{PREFIX}/disks/{{disk_id}}", h.disk),
        web.delete(f"{PREFIX}/disks/{{disk_id}}", h.remove_disk),
        *Inventory(h.res, xml_response, q.listing).routes(),
    ]
