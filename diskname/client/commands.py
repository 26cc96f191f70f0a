"""``diskname vms | disks | plug | unplug | wait | which | history`` (SPEC §15, §18)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, TextIO

from ..protocol.names import drive_letters
from . import resolve
from .http import Api, ClientError, TimedOut
from .output import as_json, table, when

INTERFACES = ("virtio", "virtio_scsi", "sata", "nvme")
# The engine answers a wait at most this long (SPEC §18); longer waits take several.
MAX_WAIT = 300.0
WAIT_MARGIN = 30.0  # the HTTP timeout of a wait beyond the wait itself
EARLY_ANSWER_PAUSE = 0.5  # an unnamed answer before its time: an engine without ?wait=


def vms(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    found = api.get("/api/vms")["vm"]
    hosts = {h["id"]: h["name"] for h in api.get("/api/hosts")["host"]}
    if args.json:
        return as_json(found, out)
    rows = [
        (v["name"], v["status"], _agent(v), hosts.get(v["host"]["id"], v["host"]["id"]), v["id"])
        for v in found
    ]
    table(("VM", "STATUS", "AGENT", "HOST", "ID"), rows, out)
    return None


def _agent(vm: dict[str, Any]) -> str:
    """The guest agent's status, and since when unless it is up (SPEC §17)."""
    agent = vm.get("guest_agent") or {}
    status = str(agent.get("status", "?"))
    if status == "up" or not agent.get("since"):
        return status
    return f"{status} since {when(agent['since'])}"


def _name(att: dict[str, Any]) -> Any:
    """The guest's name with its drive letters (``\\\\.\\PhysicalDrive1 (D:)``, SPEC §20),
    marked when it may no longer hold (the guest agent is not up)."""
    name = att.get("logical_name")
    if name is None:
        return None
    letters = drive_letters((att.get("guest") or {}).get("mountpoints"))
    shown = f"{name} ({', '.join(letters)})" if letters else name
    return f"{shown} (stale)" if att.get("stale") else shown


def _attachment_rows(atts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    def order(att: dict[str, Any]) -> tuple[bool, str, str]:
        return (att.get("logical_name") is None, att.get("logical_name") or "", att["id"])

    return [
        (
            _name(a) or _conflict(a),
            a["interface"],
            a["active"],
            *_guest_cells(a),
            a.get("logical_name_source"),
            when(a.get("logical_name_seen_at")),
            a["id"] + (" (LUN)" if a["disk"].get("lun_storage") else ""),
        )
        for a in sorted(atts, key=order)
    ]


def _guest_cells(att: dict[str, Any]) -> tuple[Any, ...]:
    """IN USE, SERIAL, BY-ID, MOUNTPOINTS: what the guest reported (SPEC §17)."""
    guest = att.get("guest") or {}
    by_id = guest.get("by_id") or []
    in_use = guest.get("in_use") if guest else None
    return (
        in_use,
        att["disk"].get("serial"),
        by_id[0] if by_id else None,
        ",".join(guest.get("mountpoints") or []),
    )


ATTACHMENT_HEADERS = (
    "NAME",
    "INTERFACE",
    "PLUGGED",
    "IN USE",
    "SERIAL",
    "BY-ID",
    "MOUNTPOINTS",
    "MATCHED BY",
    "SEEN (UTC)",
    "DISK",
)


def _conflict(att: dict[str, Any]) -> str | None:
    """A name the guest gave this disk and another: neither's (SPEC §19)."""
    conflict = att.get("name_conflict")
    return f"(conflict: {conflict['name']})" if isinstance(conflict, dict) else None


def disks(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    vm = resolve.vm(api, args.vm)
    atts = api.get(f"/api/vms/{vm['id']}/diskattachments")["disk_attachment"]
    if args.json:
        return as_json(atts, out)
    table(ATTACHMENT_HEADERS, _attachment_rows(atts), out)
    return None


def plug(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    """Hot-plug a new disk (or a given one, or a direct LUN), then wait for its name."""
    vm = resolve.vm(api, args.vm)
    base = f"/api/vms/{vm['id']}/diskattachments"
    if args.disk and args.lun:
        raise ClientError("give --disk (an existing disk) or --lun (a new LUN disk), not both")
    attached = {a["id"]: a for a in api.get(base)["disk_attachment"]}
    disk_id = args.disk.lower() if args.disk else None
    if disk_id in attached:
        att = api.put(f"{base}/{disk_id}", {"active": True})
    else:
        body: dict[str, Any] = {"interface": args.interface, "active": True}
        if disk_id:
            body["disk"] = {"id": disk_id}
        elif args.lun:
            body["disk"] = {"lun_storage": {"serial": args.lun}}
        att = api.post(base, body)
    att = _wait_named(api, f"{base}/{att['id']}", att, args.wait)
    if args.json:
        as_json(att, out)
    else:
        table(ATTACHMENT_HEADERS, _attachment_rows([att]), out)
    if att.get("logical_name") is None and args.wait > 0:
        raise TimedOut(f"plugged, but the guest has not named it within {args.wait:g} s")
    return None


def wait(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    """Print the guest's name for a VM's disk once it has one; exit 3 at the timeout."""
    vm = resolve.vm(api, args.vm)
    base = f"/api/vms/{vm['id']}/diskattachments"
    att = resolve.attachment(api.get(base)["disk_attachment"], args.disk)
    att = _wait_named(api, f"{base}/{att['id']}", att, args.timeout)
    name = att.get("logical_name")
    if args.json:
        as_json(att, out)
    elif name is not None:
        print(name, file=out)
    if name is None:
        raise TimedOut(f"the guest has not named disk {att['id']} within {args.timeout:g} s")
    return None


def _wait_named(api: Api, path: str, att: dict[str, Any], wait: float) -> dict[str, Any]:
    """The attachment once named, or as it is after ``wait`` s: the engine waits for us
    (``?wait=logical_name``), woken by the name's own event, not polled."""
    deadline = time.monotonic() + wait
    while att.get("logical_name") is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return att
        chunk = max(min(left, MAX_WAIT), 0.001)
        asked = time.monotonic()
        att = api.get(
            path, http_timeout=chunk + WAIT_MARGIN, wait="logical_name", timeout=f"{chunk:.3f}"
        )
        early = time.monotonic() - asked < chunk - EARLY_ANSWER_PAUSE
        if att.get("logical_name") is None and early and deadline - time.monotonic() > 0:
            time.sleep(EARLY_ANSWER_PAUSE)  # sync-ok: an engine that does not wait for us
    return att


def unplug(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    vm = resolve.vm(api, args.vm)
    base = f"/api/vms/{vm['id']}/diskattachments"
    att = resolve.attachment(api.get(base)["disk_attachment"], args.disk)
    att = api.put(f"{base}/{att['id']}", {"active": False})
    if args.json:
        return as_json(att, out)
    table(ATTACHMENT_HEADERS, _attachment_rows([att]), out)
    return None


def which(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    """Which VM has the disk, and what does its guest call it? With ``--vm``, a name the
    guest gives (or gave) a disk of that VM finds it too (SPEC §17)."""
    text = args.disk.strip()
    query = {"id": text.lower()} if resolve.is_uuid(text) else {"serial": text}
    if args.vm is not None and not resolve.is_uuid(text):
        with contextlib.suppress(ClientError):  # not a name of that VM's: a serial, then
            query = {"id": resolve.disk_by_name(api, resolve.vm(api, args.vm), text, sys.stderr)}
    found = api.get("/api/disks", **query)["disk"]
    if not found:
        raise ClientError(f"no disk has the id or serial {text!r}")
    if args.json:
        return as_json(found, out)
    rows = []
    for disk in found:
        for use in disk["attachments"]:
            name = _name(use) or ("(not named yet)" if use["active"] else "(unplugged)")
            rows.append(
                (
                    use["vm"]["name"],
                    name,
                    use["interface"],
                    use["active"],
                    disk["serial"],
                    disk["id"],
                    use["vm"]["id"],
                )
            )
        if not disk["attachments"]:
            rows.append(("(no VM)", "-", "-", False, disk["serial"], disk["id"], "-"))
    table(("VM", "NAME", "INTERFACE", "PLUGGED", "SERIAL", "DISK", "VM ID"), rows, out)
    return None


def history(api: Api, args: argparse.Namespace, out: TextIO) -> None:
    """The names a VM's disk has had; a disk is found by its current or a former name."""
    vm = resolve.vm(api, args.vm)
    base = f"/api/vms/{vm['id']}/diskattachments"
    atts = api.get(base)["disk_attachment"]
    try:
        disk_id = resolve.attachment(atts, args.disk)["id"]
    except ClientError:
        disk_id = resolve.disk_by_name(api, vm, args.disk, sys.stderr)
    query = {"disk_id": disk_id, "max": str(args.max)}
    entries = api.get(f"/api/vms/{vm['id']}/history", **query)["history"]
    if args.json:
        return as_json(entries, out)
    rows = [
        (when(e["seen_at"]), e["logical_name"], e["previous"], e["source"], e.get("matched_by"))
        for e in entries
    ]
    table(("SEEN (UTC)", "NAME", "PREVIOUS", "SOURCE", "MATCHED BY"), rows, out)
    return None
