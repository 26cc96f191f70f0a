"""Plan a VM's device and name update from a host report (pure, no I/O).

The store reads the VM's current rows, asks :func:`plan_update` what must
change, and writes only that: a fleet where nothing changes costs no writes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from ...protocol.hashing import canonical_json
from ...protocol.names import name_key
from .matching import MatchResult
from .models import GuestChange, NameChange, VmReport

MIN_COMPAT = (3, 5)


class DeviceRow(NamedTuple):
    """A ``vm_device`` row, columns in the order the upsert takes them."""

    disk_id: str
    device_id: str
    interface: str
    is_plugged: bool
    address: str | None
    logical_name: str | None
    logical_name_source: str | None
    logical_name_seen_at: datetime | None
    # The name this disk shares with another of the VM's (then no name is current).
    name_conflict: str | None = None
    # The guest's view (SPEC §17) as canonical JSON text: equal views, equal text.
    guest: str | None = None


def guest_text(view: Mapping[str, Any] | None) -> str | None:
    """A view as the rows hold it: canonical JSON (sorted keys, no white space)."""
    return None if view is None else canonical_json(view).decode()


@dataclass(slots=True)
class UpdatePlan:
    rows: list[DeviceRow] = field(default_factory=list)
    new_disks: list[tuple[str, str]] = field(default_factory=list)
    changes: list[NameChange] = field(default_factory=list)
    guests: list[GuestChange] = field(default_factory=list)


def compat_keeps_names(version: str | None) -> bool:
    """Whether a cluster at ``version`` keeps logical names (3.5 and later, numerically)."""
    if not version or not re.fullmatch(r"\d+(\.\d+)*", version.strip()):
        return False
    parts = tuple(int(p) for p in version.strip().split("."))
    return parts >= MIN_COMPAT


def _target(
    old: DeviceRow | None,
    base: DeviceRow,
    name: str | None,
    source: str | None,
    now: datetime,
    conflict: str | None = None,
    guest: str | None = None,
) -> DeviceRow:
    old_name = old.logical_name if old else None
    if name != old_name and name and old_name and name_key(name) == name_key(old_name):
        name = old_name  # \\.\PhysicalDrive1 is \\.\PHYSICALDRIVE1: not a change (SPEC §20)
    if name == old_name and old is not None:
        seen_at = old.logical_name_seen_at
    else:
        seen_at = now if name else None
    source = source if name else None
    return base._replace(
        logical_name=name,
        logical_name_source=source,
        logical_name_seen_at=seen_at,
        name_conflict=None if name else conflict,
        guest=guest if name else None,
    )


def plan_update(
    report: VmReport,
    match: MatchResult,
    current: list[DeviceRow],
    *,
    keep_names: bool,
    now: datetime,
    blocked: frozenset[str] | set[str] = frozenset(),
    refused: frozenset[str] | set[str] = frozenset(),
) -> UpdatePlan:
    """Rows to upsert, disks to create and name changes to record for one VM.

    A disk in ``blocked`` is plugged into another VM: it is recorded here as an
    attachment that is not plugged, with no name (a disk is in one VM at a time).
    A disk in ``refused`` is not this VM's to claim (:mod:`.claims`): the report's
    device is ignored, as if the host had not reported it.
    """
    by_disk = {row.disk_id: row for row in current}
    desired: dict[str, DeviceRow] = {}
    plan = UpdatePlan()
    for dev in report.devices:
        if not dev.plugged or dev.disk_id in desired or dev.disk_id in refused:
            continue
        plugged = dev.disk_id not in blocked
        name = match.names.get(dev.disk_id) if keep_names and plugged else None
        conflict = match.conflicts.get(dev.disk_id) if keep_names and plugged else None
        base = DeviceRow(
            dev.disk_id, dev.device_id, dev.iface, plugged, dev.address, None, None, None
        )
        desired[dev.disk_id] = _target(
            by_disk.get(dev.disk_id),
            base,
            name,
            match.sources.get(dev.disk_id),
            now,
            conflict,
            guest_text(match.guests.get(dev.disk_id)),
        )
        if dev.disk_id not in by_disk:
            plan.new_disks.append((dev.disk_id, dev.serial))
    for row in current:
        if row.disk_id not in desired:
            desired[row.disk_id] = _target(row, row._replace(is_plugged=False), None, None, now)
    for disk_id, row in desired.items():
        old = by_disk.get(disk_id)
        if old == row:
            continue
        plan.rows.append(row)
        if (old.guest if old else None) != row.guest:
            view = match.guests.get(disk_id) if row.guest is not None else None
            plan.guests.append(GuestChange(report.vm_id, disk_id, view))
        old_name = old.logical_name if old else None
        if old_name != row.logical_name:
            source = _change_source(row, match, keep_names)
            plan.changes.append(
                NameChange(
                    report.vm_id,
                    disk_id,
                    old_name,
                    row.logical_name,
                    source,
                    now,
                    matched_by=row.logical_name_source,
                )
            )
    return plan


def _change_source(row: DeviceRow, match: MatchResult, keep_names: bool) -> str:
    """Who gave the new name (agent, qemu-ga), or why the name went."""
    if row.logical_name is not None:
        return match.origins.get(row.disk_id, "agent")
    if not row.is_plugged:
        return "unplug"
    if row.name_conflict is not None:
        return "conflict"
    return "guest" if keep_names else "cluster"
