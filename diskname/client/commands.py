"""``diskname vms | disks | plug | unplug | which | history`` (SPEC §15)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Any, TextIO

from . import resolve
from .http import Api, ClientError
from .output import as_json, table, when

INTERFACES = ("virtio", "virtio_scsi", "sata", "nvme")
POLL = 0.05


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
    """The guest's name, marked when it may no longer hold (the guest agent is not up)."""
    name = att.get("logical_name")
    return f"{name} (stale)" if name is not None and att.get("stale") else name


def _attachment_rows(atts: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    def order(att: dict[str, Any]) -> tuple[bool, str, str]:
        return (att.get("logical_name") is None, att.get("logical_name") or "", att["id"])

    return [
        (
            _name(a),
            a["interface"],
            a["active"],
            a.get("logical_name_source"),
            when(a.get("logical_name_seen_at")),
            a["id"] + (" (LUN)" if a["disk"].get("lun_storage") else ""),
        )
        for a in sorted(atts, key=order)
    ]


ATTACHMENT_HEADERS = ("NAME", "INTERFACE", "PLUGGED", "MATCHED BY", "SEEN (UTC)", "DISK")


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
        return as_json(att, out)
    table(ATTACHMENT_HEADERS, _attachment_rows([att]), out)
    if att.get("logical_name") is None and args.wait > 0:
        print(f"the guest has not named it within {args.wait:g} s", file=sys.stderr)
    return None


def _wait_named(api: Api, path: str, att: dict[str, Any], wait: float) -> dict[str, Any]:
    deadline = time.monotonic() + wait
    while att.get("logical_name") is None and time.monotonic() < deadline:
        time.sleep(POLL)  # sync-ok: polling the API with a deadline
        att = api.get(path)
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
