"""Names people type, turned into the ids the API wants."""

from __future__ import annotations

import re
from typing import Any, TextIO

from ..protocol.names import name_key
from .http import Api, ApiError, ClientError

UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
MIN_PREFIX = 4


def is_uuid(text: str) -> bool:
    return bool(UUID.fullmatch(text))


def vm(api: Api, text: str) -> dict[str, Any]:
    """A VM by id, by name, or by a unique start of its id."""
    if is_uuid(text):
        try:
            found: dict[str, Any] = api.get(f"/api/vms/{text.lower()}")
        except ApiError as exc:
            if exc.status != 404:
                raise
        else:
            return found
    vms: list[dict[str, Any]] = api.get("/api/vms")["vm"]
    named = [v for v in vms if v["name"] == text]
    if not named and len(text) >= MIN_PREFIX:
        named = [v for v in vms if v["id"].startswith(text.lower())]
    if not named:
        raise ClientError(f"no VM named {text!r} (diskname vms lists them)")
    if len(named) > 1:
        ids = ", ".join(v["id"] for v in named)
        raise ClientError(f"{len(named)} VMs are called {text!r} ({ids}): give the id")
    return named[0]


def attachment(atts: list[dict[str, Any]], text: str) -> dict[str, Any]:
    """A VM's disk by id, a unique start of its id, or the guest's name.

    ``/dev/vdb`` or ``vdb``; a Windows name in any case (``\\\\.\\physicaldrive1``).
    """
    wanted, keys = text.lower(), {name_key(text), f"/dev/{text}"}
    for att in atts:
        name = att.get("logical_name")
        if att["id"] == wanted or (isinstance(name, str) and name_key(name) in keys):
            return att
    found = [a for a in atts if len(text) >= MIN_PREFIX and a["id"].startswith(wanted)]
    if len(found) == 1:
        return found[0]
    if found:
        raise ClientError(f"{len(found)} disks start with {text!r}: give more of the id")
    raise ClientError(f"the VM has no disk {text!r} (diskname disks VM lists them)")


def disk_by_name(api: Api, vm: dict[str, Any], text: str, note: TextIO) -> str:
    """The disk of ``vm`` that the guest calls (or last called) ``text``: /dev/vdb or vdb.

    A current name wins; else the VM's history says which disk had it last (after
    an unplug, or once the guest renamed it), and ``note`` says so.
    """
    atts = api.get(f"/api/vms/{vm['id']}/diskattachments")["disk_attachment"]
    names = (text, f"/dev/{text}") if not text.startswith(("/", "\\")) else (text,)
    keys = {name_key(n) for n in names}
    for att in atts:
        name = att.get("logical_name")
        if isinstance(name, str) and name_key(name) in keys:
            return str(att["id"])
    for name in names:
        found = api.get(f"/api/vms/{vm['id']}/history", logical_name=name, max="1")["history"]
        if found:
            disk_id = str(found[0]["disk"]["id"])
            note.write(f"{name} is no disk's name now; it was disk {disk_id}'s until then\n")
            return disk_id
    raise ClientError(f"the VM has no disk called {text!r}, now or before")
