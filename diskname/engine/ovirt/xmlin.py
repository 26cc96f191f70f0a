"""Request bodies of oVirt's XML API, parsed safely into the engine's requests (no I/O).

Parsing goes through defusedxml with DTDs forbidden: no entity expansion
(billion laughs), no external entities, no DTD at all; a client of this API
has no use for one. Unknown elements are skipped, as oVirt's SDK skips them;
a value the engine cannot honour (an IDE disk, a read-only one) is refused
with an :class:`Invalid` that says why, never silently dropped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from ...protocol.disks import DEFAULT_DISK_SIZE
from ..actions import AttachRequest
from ..core.models import INTERFACES, DiskSpec, canonical_uuid
from ..errors import Invalid
from ..http.inputs import check_text

# oVirt's DiskInterface values the engine does not serve (those it serves are its own).
UNSERVED_INTERFACES = {
    "ide": "IDE disks cannot be hot-plugged (QEMU has no IDE hot-plug)",
    "spapr_vscsi": "spapr_vscsi is the POWER machines' SCSI; the hosts here are x86",
}
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})


@dataclass(frozen=True, slots=True)
class AttachmentUpdate:
    """The fields of a ``PUT`` on a disk attachment; None: not given."""

    active: bool | None = None
    interface: str | None = None
    bootable: bool | None = None
    read_only: bool | None = None


def parse(data: bytes, root: str) -> ET.Element:
    """The document's root element, which must be ``<root>``; :class:`Invalid` otherwise."""
    if not data.strip():
        raise Invalid(f"the body must be a <{root}> document")
    try:
        element = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException:
        raise Invalid("the body has a DTD or entity declarations, which are refused") from None
    except ET.ParseError as exc:
        raise Invalid(f"the body is not well-formed XML: {exc}") from None
    if element.tag != root:
        raise Invalid(f"the body must be a <{root}>, not <{element.tag}>")
    return element


def attach_request(data: bytes) -> AttachRequest:
    """``POST .../diskattachments``: an existing ``<disk id>``, or a new ``<disk>``."""
    root = parse(data, "disk_attachment")
    interface = interface_of(_required_text(root, "interface"))
    _refuse_unserved(root)
    active = _bool(root, "active")
    disk = root.find("disk")
    disk_id = _disk_id(disk)
    new_disk = _new_disk(disk) if disk is not None and disk_id is None else None
    return AttachRequest(
        interface=interface,
        active=True if active is None else active,
        disk_id=disk_id,
        new_disk=new_disk,
    )


def attachment_update(data: bytes) -> AttachmentUpdate:
    """``PUT .../diskattachments/{id}``."""
    root = parse(data, "disk_attachment")
    given = _text(root, "interface")
    return AttachmentUpdate(
        active=_bool(root, "active"),
        interface=None if given is None else interface_of(given),
        bootable=_bool(root, "bootable"),
        read_only=_bool(root, "read_only"),
    )


def interface_of(value: str) -> str:
    """The engine's interface for oVirt's ``value``, or :class:`Invalid` saying why not."""
    if value in INTERFACES:
        return value
    if value in UNSERVED_INTERFACES:
        raise Invalid(f"interface {value} is not served: {UNSERVED_INTERFACES[value]}")
    raise Invalid(f"interface must be one of {sorted(INTERFACES)}, not {value!r}")


def _refuse_unserved(root: ET.Element) -> None:
    if _bool(root, "bootable"):
        raise Invalid("bootable disks are not served: the engine keeps no boot order")
    if _bool(root, "read_only"):
        raise Invalid("read-only disks are not served: hot-plugged disks are writable")


def _disk_id(disk: ET.Element | None) -> str | None:
    value = disk.get("id") if disk is not None else None
    if value is None:
        id_element = disk.find("id") if disk is not None else None
        value = id_element.text if id_element is not None else None
    if value is None:
        return None
    try:
        return canonical_uuid(value.strip())
    except ValueError:
        raise Invalid(f"disk id {value!r} is not a UUID") from None


def _new_disk(disk: ET.Element) -> DiskSpec | None:
    """A new disk's name (``name``, else ``alias``) and ``provisioned_size``, when given."""
    name = _text(disk, "name") or _text(disk, "alias")
    size = _int(disk, "provisioned_size")
    if name is None and size is None:
        return None
    if name is None:
        raise Invalid("a new disk with a provisioned_size needs a name too")
    return DiskSpec(name, DEFAULT_DISK_SIZE if size is None else size)


def disk_request(data: bytes) -> DiskSpec:
    """``POST /disks``: a floating disk's name, size, format and storage domain."""
    root = parse(data, "disk")
    if root.find("lun_storage") is not None:
        raise Invalid("a direct-LUN disk is made by attaching it: POST .../diskattachments")
    content = _text(root, "content_type")
    if content not in (None, "data"):
        raise Invalid(f"content_type {content!r} is not served: only data disks are")
    name = _text(root, "name") or _text(root, "alias")
    size = _int(root, "provisioned_size")
    if not name or size is None:
        raise Invalid("a new disk needs <name> and <provisioned_size>")
    fmt = _text(root, "format") or "cow"
    if fmt not in ("cow", "raw"):
        raise Invalid(f"format must be cow or raw, not {fmt!r}")
    sparse = _bool(root, "sparse")
    domains = root.findall("storage_domains/storage_domain")
    if len(domains) != 1:
        raise Invalid("a new disk needs one <storage_domains><storage_domain> (its id or name)")
    domain = domains[0].get("id") or _text(domains[0], "id") or _text(domains[0], "name")
    if not domain:
        raise Invalid("<storage_domain> needs an id or a <name>")
    return DiskSpec(
        name,
        size,
        storage_domain=domain,
        format=fmt,
        sparse=fmt == "cow" if sparse is None else sparse,
    )


def _text(parent: ET.Element, tag: str) -> str | None:
    child = parent.find(tag)
    if child is None or child.text is None:
        return None
    value = child.text.strip()
    check_text(value, f"<{tag}>")
    return value


def _required_text(parent: ET.Element, tag: str) -> str:
    value = _text(parent, tag)
    if not value:
        raise Invalid(f"<{parent.tag}> needs <{tag}>")
    return value


def _bool(parent: ET.Element, tag: str) -> bool | None:
    value = _text(parent, tag)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise Invalid(f"<{tag}> must be true or false, not {value!r}")


def _int(parent: ET.Element, tag: str) -> int | None:
    value = _text(parent, tag)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > 20:
        raise Invalid(f"<{tag}> must be a whole number of bytes, not {value[:40]!r}")
    return int(value)
