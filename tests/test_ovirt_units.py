"""The oVirt API's sans-IO parts: the search grammar, XML in and out; migration 0005.

The search's LIKE patterns are checked against real PostgreSQL, and the XML
reader is fuzzed: whatever bytes arrive, the answer is an Invalid (a 400), never
a crash.
"""

from __future__ import annotations

import contextlib
import random
import re
import uuid
import xml.etree.ElementTree as ET

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.engine.core.models import Attachment, Disk, VmRow
from diskname.engine.core.search import Term, name_search, parse_search
from diskname.engine.db.migrate import migration_files
from diskname.engine.errors import Invalid
from diskname.engine.ovirt import xmlin, xmlout

# -- search ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("name=myvm", "myvm"),
        ("name = myvm ", "myvm"),
        ("NAME=web*", "web*"),
        ('name="my vm"', "my vm"),
        ("name=a=b", "a=b"),
    ],
)
def test_name_searches(text: str, pattern: str) -> None:
    assert parse_search(text) == name_search(pattern)


@pytest.mark.parametrize(
    "text",
    ["bogus=up", "name=a or status=up", "name=", 'name=""', "name=a b", "name=a and", "x" * 2000],
)
def test_other_searches_are_refused(text: str) -> None:
    with pytest.raises(Invalid):
        parse_search(text)


def test_no_search_is_no_filter() -> None:
    assert parse_search(None) is None and parse_search("  ") is None
    assert parse_search("name=A", case_sensitive=False) == name_search("A", False)


@given(
    st.text(st.characters(blacklist_characters='"', blacklist_categories=["Cs", "Cc"]), min_size=1)
)
def test_any_quoted_name_is_searched_as_itself(name: str) -> None:
    assert parse_search(f'name="{name}"') == name_search(name)


def _glob(pattern: str, name: str) -> bool:
    """The reference: ``*`` is any run of characters, everything else itself."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name, re.DOTALL) is not None


async def test_like_patterns_match_as_globs_in_postgresql(pg_dsn: str) -> None:
    rng = random.Random(14)
    alphabet = "ab_%\\*.x"
    names = ["".join(rng.choices(alphabet, k=rng.randint(0, 6))) for _ in range(400)]
    patterns = ["".join(rng.choices(alphabet, k=rng.randint(1, 5))) for _ in range(400)]
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT n LIKE p AS hit FROM unnest($1::text[], $2::text[]) AS u(n, p)",
            names,
            [Term("name", p).like for p in patterns],
        )
    finally:
        await conn.close()
    got = [r["hit"] for r in rows]
    assert got == [_glob(p, n) for n, p in zip(names, patterns, strict=True)]
    assert any(got) and not all(got)


# -- XML in --------------------------------------------------------------------------

SDK_ADD = b"""<disk_attachment>
  <active>true</active>
  <bootable>false</bootable>
  <interface>virtio_scsi</interface>
  <disk>
    <format>cow</format>
    <name>mydisk</name>
    <provisioned_size>1073741824</provisioned_size>
    <storage_domains><storage_domain><name>data</name></storage_domain></storage_domains>
  </disk>
</disk_attachment>"""


def test_the_sdks_add_of_a_new_disk() -> None:
    request = xmlin.attach_request(SDK_ADD)
    assert request.interface == "virtio_scsi" and request.active and request.disk_id is None
    assert request.new_disk is not None and request.new_disk.name == "mydisk"
    assert request.new_disk.provisioned_size == 1 << 30


def test_an_existing_disk_by_id() -> None:
    disk_id = str(uuid.uuid4())
    for body in (
        f'<disk_attachment><interface>virtio</interface><disk id="{disk_id.upper()}"/>',
        f"<disk_attachment><interface>virtio</interface><disk><id>{disk_id}</id></disk>",
    ):
        request = xmlin.attach_request((body + "</disk_attachment>").encode())
        assert request.disk_id == disk_id and request.new_disk is None


def test_updates() -> None:
    update = xmlin.attachment_update(b"<disk_attachment><active>FALSE</active></disk_attachment>")
    assert update == xmlin.AttachmentUpdate(active=False)
    assert xmlin.attachment_update(b"<disk_attachment/>") == xmlin.AttachmentUpdate()


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<disk_attachment><interface>ide</interface></disk_attachment>", "IDE"),
        (b"<disk_attachment><interface>spapr_vscsi</interface></disk_attachment>", "POWER"),
        (b"<disk_attachment><interface>virtio</interface><active>yes</active>", "well-formed"),
        (
            b"<disk_attachment><interface>virtio</interface><active>yes</active></disk_attachment>",
            "true or false",
        ),
        (b"<disk_attachment></disk_attachment>", "needs <interface>"),
        (b"<disk><interface>virtio</interface></disk>", "must be a <disk_attachment>"),
        (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><disk_attachment/>', "DTD"),
        (
            b"<disk_attachment><interface>virtio</interface><disk id='nope'/></disk_attachment>",
            "not a UUID",
        ),
        (
            b"<disk_attachment><interface>virtio</interface><disk><provisioned_size>1"
            b"</provisioned_size></disk></disk_attachment>",
            "needs a name",
        ),
        (
            b"<disk_attachment><interface>virtio</interface><disk><name>x</name><provisioned_size>"
            b"1e9</provisioned_size></disk></disk_attachment>",
            "whole number",
        ),
        (
            b"<disk_attachment><interface>virtio</interface><bootable>true</bootable>"
            b"</disk_attachment>",
            "boot",
        ),
    ],
)
def test_refused_bodies_say_why(body: bytes, why: str) -> None:
    with pytest.raises(Invalid, match=re.escape(why)):
        xmlin.attach_request(body)


@given(st.binary(max_size=300))
def test_any_bytes_are_a_request_or_invalid(data: bytes) -> None:
    with contextlib.suppress(Invalid):
        xmlin.attach_request(data)


@given(st.text(max_size=40), st.sampled_from(["virtio", "ide", "sata", "nvme", ""]))
def test_any_disk_name_is_a_request_or_invalid(name: str, interface: str) -> None:
    element = ET.Element("disk_attachment")
    ET.SubElement(element, "interface").text = interface
    ET.SubElement(ET.SubElement(element, "disk"), "name").text = name
    try:
        request = xmlin.attach_request(ET.tostring(element))
    except Invalid:
        return
    assert request.new_disk is None or request.new_disk.name == name.strip()


# -- XML out -------------------------------------------------------------------------


def test_values_are_written_as_ovirt_reads_them() -> None:
    vm_id, disk_id, host_id = (str(uuid.uuid4()) for _ in range(3))
    disk = Disk(disk_id, 'a <"&> name', 5, "ok")
    att = Attachment(
        vm_id, disk_id, "dev", "nvme", True, None, "/dev/nvme0n1", "serial", None, disk
    )
    vm = ET.fromstring(xmlout.render(xmlout.vm(VmRow(vm_id, "v", "Powering up", host_id), [att])))
    assert vm.findtext("status") == "powering_up"
    inline = vm.find("disk_attachments/disk_attachment")
    assert inline is not None and inline.findtext("logical_name") == "/dev/nvme0n1"
    assert inline.findtext("interface") == "nvme"  # the SDK reads an interface it lacks as None
    written = ET.fromstring(xmlout.render(xmlout.disk(disk)))
    assert written.findtext("name") == 'a <"&> name' and written.findtext("provisioned_size") == "5"
    unnamed = xmlout.attachment(Attachment(vm_id, disk_id, "d", "sata", False, *[None] * 4))
    assert unnamed.find("logical_name") is None and unnamed.findtext("active") == "false"
    assert xmlout.vm_status("Migration Source") == "unknown"


def test_a_fault_has_the_reason_and_the_detail() -> None:
    fault = ET.fromstring(xmlout.render(xmlout.fault(404, "no VM x")))
    assert (fault.tag, fault.findtext("reason"), fault.findtext("detail")) == (
        "fault",
        "Not Found",
        "no VM x",
    )


# -- migration 0005 --------------------------------------------------------------------


async def test_existing_disks_get_names_sizes_and_status(pg_dsn: str) -> None:
    before = [(v, sql) for v, sql in migration_files() if v < "0005"]
    conn = await asyncpg.connect(pg_dsn)
    try:
        for _, sql in before:
            await conn.execute(sql)
        host, vm, disks = uuid.uuid4(), uuid.uuid4(), [uuid.uuid4() for _ in range(3)]
        await conn.execute(
            "INSERT INTO hosts (id, name, address, port) VALUES ($1, 'h', '127.0.0.1', 1)", host
        )
        await conn.execute("INSERT INTO vms (id, name, host_id) VALUES ($1, 'db', $2)", vm, host)
        for n, disk in enumerate(disks):
            await conn.execute(
                "INSERT INTO disks (id, serial, created_at) "
                "VALUES ($1, 's', now() + $2 * interval '1 s')",
                disk,
                n,
            )
        for disk in disks[:2]:
            await conn.execute(
                "INSERT INTO vm_device (vm_id, disk_id, device_id, interface) "
                "VALUES ($1, $2, $3, 'virtio')",
                vm,
                disk,
                uuid.uuid4(),
            )
        await conn.execute(next(sql for v, sql in migration_files() if v.startswith("0005")))
        rows = await conn.fetch(
            "SELECT id, name, provisioned_size, status FROM disks ORDER BY created_at"
        )
        assert [r["name"] for r in rows] == ["db_Disk1", "db_Disk2", f"disk-{str(disks[2])[:8]}"]
        assert {(r["provisioned_size"], r["status"]) for r in rows} == {(1 << 30, "ok")}
        # A disk inserted with no name (as the monitor inserts one) is named by its id.
        late = uuid.uuid4()
        await conn.execute("INSERT INTO disks (id, serial) VALUES ($1, 's')", late)
        assert await conn.fetchval("SELECT name FROM disks WHERE id = $1", late) == (
            f"disk-{str(late)[:8]}"
        )
    finally:
        await conn.close()
