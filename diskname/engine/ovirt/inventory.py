"""oVirt's read-only inventory: ``/hosts``, ``/clusters``, ``/datacenters``,
``/storagedomains`` (SPEC §18), enough for the ``ovirt_*_info`` modules.

The engine has one data center (oVirt's "Default", with a fixed id) holding its
clusters; every host is in the default cluster; a storage domain is one host's
(a libvirt pool, a directory, memory) and reports that host.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

from aiohttp import web

from ..actions import Actions
from ..core.models import HostRow, StorageDomain
from ..core.search import Search
from ..db.catalog import ClusterRow
from ..errors import NotFound
from .query import path_id
from .xmlout import PREFIX

DATA_CENTER_ID = "5849b030-626e-47cb-ad90-3ce782d831b3"
DATA_CENTER_NAME = "Default"
DEFAULT_CLUSTER_ID = "00000000-0000-0000-0000-000000000001"  # migration 0001's
# The engine's host status in oVirt's HostStatus.
HOST_STATUS = {"up": "up", "unreachable": "non_responsive", "untrusted": "non_operational"}

Respond = Callable[[ET.Element], web.Response]
Query = Callable[[web.Request, str], tuple[Search | None, int | None]]


def _element(tag: str, rel: str, obj_id: str, name: str) -> ET.Element:
    root = ET.Element(tag, {"href": f"{PREFIX}/{rel}/{obj_id}", "id": obj_id})
    ET.SubElement(root, "name").text = name
    return root


def _ref(parent: ET.Element, tag: str, rel: str, obj_id: str) -> None:
    ET.SubElement(parent, tag, {"href": f"{PREFIX}/{rel}/{obj_id}", "id": obj_id})


def _text(parent: ET.Element, tag: str, value: object) -> None:
    ET.SubElement(parent, tag).text = str(value).lower() if isinstance(value, bool) else str(value)


def _version(parent: ET.Element, text: str) -> None:
    major, _, minor = text.partition(".")
    version = ET.SubElement(parent, "version")
    _text(version, "major", major)
    _text(version, "minor", minor or "0")


def host(row: HostRow) -> ET.Element:
    root = _element("host", "hosts", row.id, row.name)
    _text(root, "address", row.address)
    _text(root, "port", row.port)
    _text(root, "status", HOST_STATUS.get(row.status, "unassigned"))
    _ref(root, "cluster", "clusters", DEFAULT_CLUSTER_ID)
    return root


def cluster(row: ClusterRow) -> ET.Element:
    root = _element("cluster", "clusters", row.id, row.name)
    _version(root, row.compatibility_version)
    _ref(root, "data_center", "datacenters", DATA_CENTER_ID)
    return root


def data_center(versions: Iterable[str]) -> ET.Element:
    root = _element("data_center", "datacenters", DATA_CENTER_ID, DATA_CENTER_NAME)
    _text(root, "local", False)
    _text(root, "status", "up")
    _version(root, min(versions, default="4.7"))
    for rel in ("clusters", "storagedomains"):
        ET.SubElement(root, "link", {"href": f"{PREFIX}/datacenters/{DATA_CENTER_ID}/{rel}"})
        root[-1].set("rel", rel)
    return root


def storage_domain(row: StorageDomain) -> ET.Element:
    root = _element("storage_domain", "storagedomains", row.id, row.name)
    _text(root, "available", row.available)
    _text(root, "used", row.used)
    _text(root, "committed", 0)
    _text(root, "description", f"a {row.kind} storage domain of host {row.host_id}")
    _text(root, "external_status", "ok")
    _text(root, "master", False)
    _text(root, "status", "active")
    _text(root, "type", "data")
    storage = ET.SubElement(root, "storage")
    _text(storage, "type", "localfs")
    _ref(root, "host", "hosts", row.host_id)
    _ref(ET.SubElement(root, "data_centers"), "data_center", "datacenters", DATA_CENTER_ID)
    return root


def _listed(tag: str, items: Iterable[ET.Element]) -> ET.Element:
    root = ET.Element(tag)
    root.extend(items)
    return root


class Inventory:
    """The handlers; ``query`` reads ``search`` (for a collection) and ``max``."""

    def __init__(self, get: Callable[[web.Request], Actions], respond: Respond, query: Query):
        self._get, self._respond, self._query = get, respond, query

    async def hosts(self, request: web.Request) -> web.Response:
        search, limit = self._query(request, "hosts")
        rows = await self._get(request).hosts(search, limit)
        return self._respond(_listed("hosts", map(host, rows)))

    async def host(self, request: web.Request) -> web.Response:
        row = await self._get(request).host(_id(request, "host"))
        return self._respond(host(row))

    async def clusters(self, request: web.Request) -> web.Response:
        search, limit = self._query(request, "clusters")
        rows = [c for c in await self._get(request).clusters() if _found(search, c.name)]
        return self._respond(_listed("clusters", map(cluster, rows[:limit])))

    async def cluster(self, request: web.Request) -> web.Response:
        row = await self._get(request).cluster(_id(request, "cluster"))
        return self._respond(cluster(row))

    async def data_centers(self, request: web.Request) -> web.Response:
        search, limit = self._query(request, "datacenters")
        found = _found(search, DATA_CENTER_NAME) and limit != 0
        versions = [c.compatibility_version for c in await self._get(request).clusters()]
        return self._respond(_listed("data_centers", [data_center(versions)] if found else []))

    async def data_center(self, request: web.Request) -> web.Response:
        if _id(request, "data center") != DATA_CENTER_ID:
            raise NotFound(f"no data center {request.match_info['id']}")
        versions = [c.compatibility_version for c in await self._get(request).clusters()]
        return self._respond(data_center(versions))

    async def storage_domains(self, request: web.Request) -> web.Response:
        search, limit = self._query(request, "storagedomains")
        rows = await self._get(request).storage_domains(search, limit)
        return self._respond(_listed("storage_domains", map(storage_domain, rows)))

    async def storage_domain(self, request: web.Request) -> web.Response:
        row = await self._get(request).storage_domain(_id(request, "storage domain"))
        return self._respond(storage_domain(row))

    def routes(self) -> list[web.RouteDef]:
        out = []
        for rel, many, one in (
            ("hosts", self.hosts, self.host),
            ("clusters", self.clusters, self.cluster),
            ("datacenters", self.data_centers, self.data_center),
            ("storagedomains", self.storage_domains, self.storage_domain),
        ):
            out += [web.get(f"{PREFIX}/{rel}", many), web.get(f"{PREFIX}/{rel}/{{id}}", one)]
        return out


def _found(search: Search | None, name: str) -> bool:
    return search is None or search.matches({"name": name})


def _id(request: web.Request, what: str) -> str:
    return path_id(request, "id", what)
