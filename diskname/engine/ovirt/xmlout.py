"""The engine's values written as oVirt's API v4 XML (the representation, no I/O).

Shapes follow oVirt's model as its SDK reads it: the root tag names the type
(``<vm>``, ``<vms>``, ``<fault>``), identity goes in ``id`` and ``href``
attributes, ``href`` always starts with :data:`PREFIX` (the SDK's
``follow_link`` needs it), and a value the engine does not have is left out
rather than made up (the SDK needs no element).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from http import HTTPStatus

from ... import __version__
from ..core.models import Attachment, Disk, VmRow

PREFIX = "/ovirt-engine/api"
CONTENT_TYPE = "application/xml"

# oVirt's VmStatus values; the hosts report VDSM's spelling ("Up", "Powering up").
VM_STATUSES = frozenset(
    [
        "down",
        "image_locked",
        "migrating",
        "not_responding",
        "paused",
        "powering_down",
        "powering_up",
        "reboot_in_progress",
        "restoring_state",
        "saving_state",
        "suspended",
        "unassigned",
        "unknown",
        "up",
        "wait_for_launch",
    ]
)


def vm_href(vm_id: str) -> str:
    return f"{PREFIX}/vms/{vm_id}"


def attachments_href(vm_id: str) -> str:
    return f"{vm_href(vm_id)}/diskattachments"


def attachment_href(vm_id: str, disk_id: str) -> str:
    return f"{attachments_href(vm_id)}/{disk_id}"


def disk_href(disk_id: str) -> str:
    return f"{PREFIX}/disks/{disk_id}"


def render(element: ET.Element) -> bytes:
    """The document's bytes: UTF-8 with an XML declaration."""
    data: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=True)
    return data


def vm_status(status: str) -> str:
    """The host's VM status in oVirt's spelling; ``unknown`` for anything else."""
    spelled = status.strip().lower().replace(" ", "_")
    return spelled if spelled in VM_STATUSES else "unknown"


def _ref(parent: ET.Element, tag: str, ref_id: str, href: str | None = None) -> ET.Element:
    attrs = {"href": href, "id": ref_id} if href else {"id": ref_id}
    return ET.SubElement(parent, tag, attrs)


def _text(parent: ET.Element, tag: str, value: str | int | bool | None) -> None:
    if value is None:
        return
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    ET.SubElement(parent, tag).text = text


def _link(parent: ET.Element, rel: str, href: str) -> None:
    ET.SubElement(parent, "link", {"href": href, "rel": rel})


def api(now: datetime) -> ET.Element:
    """``GET /ovirt-engine/api``: links to what is served, and who serves it."""
    root = ET.Element("api")
    for rel in ("clusters", "datacenters", "disks", "hosts", "storagedomains", "vms"):
        _link(root, rel, f"{PREFIX}/{rel}")
        _link(root, f"{rel}/search", f"{PREFIX}/{rel}?search={{query}}")
    info = ET.SubElement(root, "product_info")
    _text(info, "name", "diskname")
    _text(info, "vendor", "diskname")
    _text(ET.SubElement(info, "version"), "full_version", __version__)
    _text(root, "time", now.isoformat(timespec="milliseconds"))
    return root


def vm(
    row: VmRow, attachments: Sequence[Attachment] | None = None, *, disks: bool = False
) -> ET.Element:
    """A ``<vm>``; with ``attachments`` (``follow=disk_attachments``) they are inlined."""
    root = ET.Element("vm", {"href": vm_href(row.id), "id": row.id})
    _text(root, "name", row.name)
    _text(root, "status", vm_status(row.status))
    _ref(root, "host", row.host_id)
    if attachments is not None:
        root.append(attachment_list(row.id, attachments, disks=disks))
    _link(root, "diskattachments", attachments_href(row.id))
    return root


def vm_list(
    rows: Iterable[VmRow],
    attachments: Mapping[str, Sequence[Attachment]] | None = None,
    *,
    disks: bool = False,
) -> ET.Element:
    root = ET.Element("vms")
    for row in rows:
        root.append(vm(row, None if attachments is None else attachments[row.id], disks=disks))
    return root


def attachment(att: Attachment, *, disks: bool = False) -> ET.Element:
    """A ``<disk_attachment>``: its id is the disk's; ``logical_name`` only once known.

    With ``disks`` (``follow=disk_attachments.disk``) the disk is written whole.
    """
    root = ET.Element(
        "disk_attachment", {"href": attachment_href(att.vm_id, att.disk_id), "id": att.disk_id}
    )
    _text(root, "active", att.active)
    _text(root, "bootable", False)  # the engine keeps no boot order
    _text(root, "interface", att.interface)
    _text(root, "logical_name", att.logical_name)
    _text(root, "read_only", False)
    if disks and att.disk is not None:
        root.append(disk(att.disk))
    else:
        _ref(root, "disk", att.disk_id, disk_href(att.disk_id))
    _ref(root, "vm", att.vm_id, vm_href(att.vm_id))
    return root


def attachment_list(vm_id: str, atts: Iterable[Attachment], *, disks: bool = False) -> ET.Element:
    root = ET.Element("disk_attachments", {"href": attachments_href(vm_id)})
    for att in atts:
        root.append(attachment(att, disks=disks))
    return root


def disk(row: Disk) -> ET.Element:
    """A ``<disk>``: oVirt's ``alias`` and ``name`` are one here."""
    root = ET.Element("disk", {"href": disk_href(row.id), "id": row.id})
    _text(root, "alias", row.name)
    _text(root, "name", row.name)
    _text(root, "content_type", "data")
    _text(root, "format", row.format)
    _text(root, "provisioned_size", row.provisioned_size)
    _text(root, "sparse", row.sparse)
    _text(root, "status", row.status)
    _text(root, "storage_type", "image")
    # oVirt's clients iterate a disk's domains: a disk made by a hot-plug has none.
    domains = ET.SubElement(root, "storage_domains")
    if row.storage_domain is not None:
        sd = row.storage_domain.id
        _ref(domains, "storage_domain", sd, f"{PREFIX}/storagedomains/{sd}")
    return root


def disk_list(rows: Iterable[Disk]) -> ET.Element:
    root = ET.Element("disks")
    for row in rows:
        root.append(disk(row))
    return root


def fault(status: int, detail: str) -> ET.Element:
    """``<fault>``: the status's reason phrase and the engine's message."""
    root = ET.Element("fault")
    _text(root, "reason", _reason(status))
    _text(root, "detail", detail)
    return root


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def action_done() -> ET.Element:
    """What a DELETE answers: oVirt's ``<action>`` with status ``complete``."""
    root = ET.Element("action")
    _text(root, "status", "complete")
    return root
