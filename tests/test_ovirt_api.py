"""oVirt's XML API (SPEC §14) on a real engine (port 0, real PostgreSQL, a fake host).

What oVirt's SDK relies on, checked on the wire: root tags, ids and hrefs under
/ovirt-engine/api, a Content-Type on every answer, 201/200/200 for POST/PUT/DELETE,
faults with the fitting status for everything refused. tests/test_ovirt_sdk.py
drives the same routes with the SDK itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from .conftest import wait_until
from .test_engine_api import Api, engine
from .test_engine_auth import engine as secured_engine

API = "/ovirt-engine/api"
XML = {"Content-Type": "application/xml", "Accept": "application/xml", "Version": "4"}


@dataclass
class Answer:
    status: int
    content_type: str
    headers: Any
    root: ET.Element

    def text(self, tag: str) -> str | None:
        return self.root.findtext(tag)


@dataclass
class Xml:
    api: Api

    async def call(
        self,
        method: str,
        path: str,
        body: str | None = None,
        *,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        url = self.api.base + path
        async with self.api.http.request(
            method, url, data=body, headers={**XML, **(headers or {})}
        ) as resp:
            data = await resp.read()
            # Every answer has a Content-Type: the SDK crashes on one without.
            assert "Content-Type" in resp.headers, (method, path, resp.status)
            if status is not None:
                assert resp.status == status, (method, path, resp.status, data)
            root = ET.fromstring(data)
            return Answer(resp.status, resp.content_type, resp.headers, root)

    async def fault(self, method: str, path: str, status: int, body: str | None = None,
                    headers: dict[str, str] | None = None) -> str:  # fmt: skip
        answer = await self.call(method, path, body, status=status, headers=headers)
        assert answer.content_type == "application/xml"
        assert answer.root.tag == "fault" and answer.text("reason"), ET.tostring(answer.root)
        return answer.text("detail") or ""


@pytest.fixture
async def xml(pg_dsn: str) -> AsyncIterator[Xml]:
    async with engine(pg_dsn) as api:
        yield Xml(api)


def new_disk(name: str, interface: str = "virtio_scsi", size: int = 2 << 30) -> str:
    """What the SDK posts for ``add(DiskAttachment(disk=Disk(name=..., ...)))``."""
    return (
        f"<disk_attachment><active>true</active><bootable>false</bootable>"
        f"<interface>{interface}</interface><disk><format>cow</format><name>{name}</name>"
        f"<provisioned_size>{size}</provisioned_size><storage_domains><storage_domain>"
        f"<name>data</name></storage_domain></storage_domains></disk></disk_attachment>"
    )


async def test_api_root_links_what_is_served(xml: Xml) -> None:
    answer = await xml.call("GET", API, status=200)
    assert answer.content_type == "application/xml" and answer.root.tag == "api"
    links = {link.get("rel"): link.get("href") for link in answer.root.iter("link")}
    assert links["vms"] == f"{API}/vms" and links["disks"] == f"{API}/disks"
    assert answer.text("product_info/name") == "diskname"
    assert answer.text("time")


async def test_vms_search_max_and_follow(xml: Xml) -> None:
    vm_id = await xml.api.vm()  # vm1
    host_id = (await xml.api.call("GET", f"/api/vms/{vm_id}"))["host"]["id"]
    other = await xml.api.call(
        "POST", "/api/vms", {"name": "web_2", "host": {"id": host_id}}, status=201
    )

    async def up() -> bool:  # "Up" once the engine has polled the host
        found = (await xml.call("GET", f"{API}/vms/{vm_id}", status=200)).text("status")
        return found == "up"

    await wait_until(up)
    vms = (await xml.call("GET", f"{API}/vms", status=200)).root
    assert vms.tag == "vms" and [v.findtext("name") for v in vms] == ["vm1", "web_2"]
    vm = vms[0]
    assert vm.get("id") == vm_id and vm.get("href") == f"{API}/vms/{vm_id}"
    host = vm.find("host")
    assert host is not None and host.get("id") == host_id
    link = vm.find("link[@rel='diskattachments']")
    assert link is not None and link.get("href") == f"{API}/vms/{vm_id}/diskattachments"

    async def names(query: str) -> list[str | None]:
        found = (await xml.call("GET", f"{API}/vms?{query}", status=200)).root
        return [v.findtext("name") for v in found]

    assert await names("search=name%3Dvm1") == ["vm1"]
    assert await names("search=name%3D%22web_2%22") == ["web_2"]
    assert await names("search=name%3Dweb*") == ["web_2"]
    assert await names("search=name%3D*") == ["vm1", "web_2"]
    # LIKE's own wildcards are plain characters in oVirt's search.
    assert await names("search=name%3Dweb%252") == [] and await names("search=name%3Dvm_") == []
    assert await names("search=name%3DVM1") == []
    assert await names("search=name%3DVM1&case_sensitive=false") == ["vm1"]
    assert await names("max=1") == ["vm1"] and await names("max=-1") == ["vm1", "web_2"]

    followed = (await xml.call("GET", f"{API}/vms?follow=disk_attachments", status=200)).root
    inline = followed[0].find("disk_attachments")
    assert inline is not None and len(inline) == 1
    assert inline[0].findtext("interface") == "virtio" and inline[0].findtext("active") == "true"
    assert followed[1].find("disk_attachments") is not None
    one = (await xml.call("GET", f"{API}/vms/{other['id']}", status=200)).root
    assert one.tag == "vm" and one.findtext("name") == "web_2"
    deep = await xml.call("GET", f"{API}/vms/{vm_id}?follow=disk_attachments.disk", status=200)
    assert deep.text("disk_attachments/disk_attachment/disk/name") == "vm1_Disk1"


async def test_attach_wait_deactivate_activate_and_remove(xml: Xml) -> None:
    vm_id = await xml.api.vm()
    atts = f"{API}/vms/{vm_id}/diskattachments"
    added = await xml.call("POST", atts, new_disk("data1"), status=201)
    disk_id = added.root.get("id")
    assert disk_id is not None
    href = f"{atts}/{disk_id}"
    assert added.root.tag == "disk_attachment" and added.root.get("href") == href
    assert added.headers["Location"] == href
    assert added.text("active") == "true" and added.text("interface") == "virtio_scsi"
    assert added.text("bootable") == "false"
    disk_ref, vm_ref = added.root.find("disk"), added.root.find("vm")
    assert disk_ref is not None and disk_ref.get("href") == f"{API}/disks/{disk_id}"
    assert vm_ref is not None and vm_ref.get("href") == f"{API}/vms/{vm_id}"

    disk = await xml.call("GET", f"{API}/disks/{disk_id}", status=200)
    assert disk.root.tag == "disk" and disk.text("name") == disk.text("alias") == "data1"
    assert disk.text("status") == "ok" and disk.text("provisioned_size") == str(2 << 30)
    listed = (await xml.call("GET", f"{API}/disks?search=name%3Ddata1", status=200)).root
    assert listed.tag == "disks" and [d.get("id") for d in listed] == [disk_id]

    async def logical_name() -> str | None:
        return (await xml.call("GET", href, status=200)).text("logical_name")

    assert await wait_until(logical_name) == "/dev/vdb"  # the fake guest names vdX
    off = await xml.call("PUT", href, "<disk_attachment><active>false</active></disk_attachment>")
    assert off.status == 200 and off.text("active") == "false" and off.text("logical_name") is None
    on = await xml.call("PUT", href, "<disk_attachment><active>true</active></disk_attachment>")
    assert on.status == 200 and on.text("active") == "true"
    assert await wait_until(logical_name) == "/dev/vdb"
    same = await xml.call("PUT", href, "<disk_attachment><interface>virtio_scsi</interface>"
                          "</disk_attachment>", status=200)  # fmt: skip
    assert same.text("active") == "true"

    removed = await xml.call("DELETE", href, status=200)  # 200: a 204 is an error to the SDK
    assert removed.root.tag == "action" and removed.text("status") == "complete"
    await xml.fault("GET", href, 404)
    assert (await xml.call("GET", f"{API}/disks/{disk_id}", status=200)).text("name") == "data1"
    # Attach the detached disk again by id, then remove it with the disk.
    again = (
        f"<disk_attachment><interface>virtio</interface><disk id='{disk_id}'/></disk_attachment>"
    )
    await xml.call("POST", atts, again, status=201)
    await xml.call("DELETE", f"{href}?detach_only=false", status=200)
    await xml.fault("GET", f"{API}/disks/{disk_id}", 404)


async def test_faults(xml: Xml) -> None:
    vm_id = await xml.api.vm()
    atts = f"{API}/vms/{vm_id}/diskattachments"
    missing = str(uuid.uuid4())
    assert missing in await xml.fault("GET", f"{API}/vms/{missing}", 404)
    await xml.fault("GET", f"{API}/vms/not-a-vm", 404)
    await xml.fault("GET", f"{API}/disks/{missing}", 404)
    await xml.fault("GET", f"{API}/templates", 404)  # not served, still a fault
    assert "only host=VALUE" in await xml.fault("GET", f"{API}/vms?search=vm_names%3Dx", 400)
    await xml.fault("GET", f"{API}/vms?max=ten", 400)
    await xml.fault("GET", f"{API}/vms?follow=nics", 400)
    await xml.fault("GET", f"{API}/vms?case_sensitive=maybe", 400)
    await xml.fault("GET", f"{API}/vms", 400, headers={"Version": "3"})
    assert "IDE" in await xml.fault("POST", atts, 400, new_disk("d", "ide"))
    assert "POWER" in await xml.fault("POST", atts, 400, new_disk("d", "spapr_vscsi"))
    await xml.fault("POST", atts, 400, new_disk("d", "floppy"))
    await xml.fault("POST", atts, 400, "<disk_attachment><active>true</active></disk_attachment>")
    await xml.fault("POST", atts, 400, "<disk_attachment><interface>virtio")
    await xml.fault("POST", atts, 400, "<vm><interface>virtio</interface></vm>")
    await xml.fault("POST", atts, 400, "")
    bad_size = new_disk("d").replace(str(2 << 30), "-5")
    await xml.fault("POST", atts, 400, bad_size)
    read_only = "<disk_attachment><interface>virtio</interface><read_only>true</read_only>"
    await xml.fault("POST", atts, 400, read_only + "</disk_attachment>")
    # Writes need application/xml on this prefix (a form post cannot forge one).
    await xml.fault("POST", atts, 415, new_disk("d"), headers={"Content-Type": "text/plain"})
    # A method not served on a path that is: 405 with Allow, as a fault.
    answer = await xml.call("PATCH", atts, "<x/>", status=405)
    assert answer.root.tag == "fault" and "POST" in answer.headers["Allow"]
    # The same disk plugged into a second VM: a conflict.
    added = await xml.call("POST", atts, new_disk("shared"), status=201)
    host_id = (await xml.api.call("GET", f"/api/vms/{vm_id}"))["host"]["id"]
    second = await xml.api.call("POST", "/api/vms", {"name": "vm2", "host": {"id": host_id}})
    body = f"<disk_attachment><interface>virtio</interface><disk id='{added.root.get('id')}'/>"
    second_atts = f"{API}/vms/{second['id']}/diskattachments"
    assert "plugged" in await xml.fault("POST", second_atts, 409, body + "</disk_attachment>")


async def test_dtds_and_entities_are_refused_quickly(xml: Xml) -> None:
    vm_id = await xml.api.vm()
    atts = f"{API}/vms/{vm_id}/diskattachments"
    entities = [
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i else "&lol;" * 10}">' for i in range(9)
    ]
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + "".join(entities)
        + "]><disk_attachment><interface>&lol8;</interface></disk_attachment>"
    )  # fmt: skip
    external = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        "<disk_attachment><interface>&x;</interface></disk_attachment>"
    )
    for body in (laughs, external):
        started = time.monotonic()
        assert "DTD" in await xml.fault("POST", atts, 400, body)
        assert time.monotonic() - started < 5
    assert len(await xml.api.call("GET", f"/api/vms/{vm_id}/diskattachments")) == 1


async def test_a_new_disk_is_locked_until_its_first_plug_is_done(pg_dsn: str) -> None:
    async with engine(pg_dsn, action_timeout=3.0) as api:
        vm_id = await api.vm()
        api.fake.silent.add("VM.hotplugDisk")  # the host takes the plug and never answers
        xml = Xml(api)
        post = asyncio.create_task(
            xml.call("POST", f"{API}/vms/{vm_id}/diskattachments", new_disk("slow"))
        )

        async def locked() -> str | None:
            disks = (await xml.call("GET", f"{API}/disks?search=name%3Dslow", status=200)).root
            return disks[0].findtext("status") if len(disks) else None

        assert await wait_until(locked) == "locked"
        assert (await post).status == 504  # the host timed out: the new disk is undone
        assert await locked() is None


async def test_json_api_shows_disk_names_and_sizes(xml: Xml) -> None:
    api = xml.api
    vm_id = await api.vm()
    base = f"/api/vms/{vm_id}/diskattachments"
    body = {"interface": "virtio", "disk": {"name": "logs", "provisioned_size": 5 << 30}}
    att = await api.call("POST", base, body, status=201)
    assert att["disk"] == {
        "id": att["id"], "name": "logs", "provisioned_size": 5 << 30, "status": "ok",
        "serial": att["id"][:20],
    }  # fmt: skip
    root = (await api.call("GET", base))["disk_attachment"]
    assert {a["disk"]["name"] for a in root} == {"vm1_Disk1", "logs"}
    sized = {"interface": "virtio", "disk": {"provisioned_size": 1}}
    assert "name too" in await api.error("POST", base, 400, sized)
    await api.error("POST", base, 400, {"interface": "virtio", "disk": {"name": ""}})
    await api.error("POST", base, 400, {"interface": "virtio", "disk": {"name": "x" * 256}})
    await api.error("POST", base, 400, {"interface": "virtio", "disk": {"name": "a\nb"}})
    await api.error("POST", base, 400, {"interface": "virtio",
                                        "disk": {"name": "x", "provisioned_size": 0}})  # fmt: skip
    both = {"interface": "virtio", "disk": {"id": att["id"], "name": "again"}}
    await api.error("POST", base, 400, both)
    # The XML API reads the same disk the JSON API made.
    disk = await xml.call("GET", f"{API}/disks/{att['id']}", status=200)
    assert disk.text("name") == "logs" and disk.text("provisioned_size") == str(5 << 30)


async def test_xml_api_needs_credentials_and_a_writer_role(pg_dsn: str) -> None:
    async with secured_engine(pg_dsn) as eng:
        async with eng.http.get(eng.base + f"{API}/vms", headers=XML) as resp:
            assert resp.status == 401 and resp.content_type == "application/xml"
            assert ET.fromstring(await resp.read()).tag == "fault"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        token = await eng.token("bob")  # a viewer
        headers = {**XML, "Authorization": f"Bearer {token}"}
        async with eng.http.get(eng.base + f"{API}/vms", headers=headers) as resp:
            assert resp.status == 200 and ET.fromstring(await resp.read()).tag == "vms"
        path = f"{API}/vms/{uuid.uuid4()}/diskattachments"
        async with eng.http.post(eng.base + path, data=new_disk("x"), headers=headers) as resp:
            assert resp.status == 403 and resp.content_type == "application/xml"
            assert "viewer" in (ET.fromstring(await resp.read()).findtext("detail") or "")
