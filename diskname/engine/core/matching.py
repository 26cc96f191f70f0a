"""Match a guest's disk mapping to the disks plugged into its VM (pure, no I/O).

The only identity the guest shares with management is the serial the
hypervisor gave each disk (SPEC §2). Guests report it bare, bus-prefixed
(``0QEMU_QEMU_HARDDISK_<s>``), space-padded or cut short, so a reported serial
matches a disk when, stripped of white space, it equals the disk's serial or
ends with it. A serial cut short matches when it is a long enough prefix of
exactly one disk's serial. When serials fail, the guest's reported address may
equal the address the host gave the device. Anything ambiguous is dropped and
counted: a wrong name is worse than no name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...protocol.guest_view import View, guest_view
from ...protocol.names import valid_device_path

MIN_TRUNCATED_SERIAL = 8

SOURCE_SERIAL = "serial"
SOURCE_SERIAL_PREFIX = "serial-prefix"
SOURCE_ADDRESS = "address"


@dataclass(frozen=True, slots=True)
class VmDisk:
    """A disk of the VM as the host describes it."""

    disk_id: str
    serial: str
    plugged: bool = True
    address: str | None = None


@dataclass(frozen=True, slots=True)
class MatchResult:
    """The name per disk id, how it was matched, and what was rejected (by reason)."""

    names: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)
    # Which guest source reported each name: "agent" or "qemu-ga".
    origins: dict[str, str] = field(default_factory=dict)
    # The guest's whole view of each named disk (SPEC §17): ``attachment.guest``.
    guests: dict[str, View] = field(default_factory=dict)
    # Disks the guest gave a name it gave another disk too: that name, kept by neither.
    conflicts: dict[str, str] = field(default_factory=dict)


def valid_name(name: object) -> bool:
    """A device path by the grammar of SPEC §12 (:mod:`diskname.protocol.names`)."""
    return valid_device_path(name)


ORIGIN_AGENT = "agent"
ORIGINS = frozenset({ORIGIN_AGENT, "qemu-ga"})


def entry_origin(entry: Mapping[str, Any]) -> str:
    """The guest source of a mapping entry (the host marks qemu-ga's; the agent's carry none)."""
    origin = entry.get("source")
    return origin if origin in ORIGINS else ORIGIN_AGENT


def normalise_serial(reported: str) -> str:
    """The reported serial without any white space (padding included)."""
    return "".join(reported.split())


def _serial_candidates(reported: str, disks: Sequence[VmDisk]) -> tuple[list[VmDisk], str]:
    exact = [d for d in disks if d.serial and d.serial == reported]
    if len(exact) == 1:
        return exact, SOURCE_SERIAL
    suffix = [d for d in disks if d.serial and reported.endswith(d.serial)]
    if suffix:
        return suffix, SOURCE_SERIAL
    return _truncated_candidates(reported, disks), SOURCE_SERIAL_PREFIX


def _truncated_candidates(reported: str, disks: Sequence[VmDisk]) -> list[VmDisk]:
    # A cut-short serial may still carry a bus prefix: try the text after the last "_".
    tails = {reported, reported.rsplit("_", 1)[-1]}
    tails = {t for t in tails if len(t) >= MIN_TRUNCATED_SERIAL}
    return [d for d in disks if d.serial and any(d.serial.startswith(t) for t in tails)]


def _addresses(raw: Any) -> set[str]:
    """Every address text in an entry's ``address`` (a string, or an object/list of them)."""
    if isinstance(raw, str):
        values: Iterable[Any] = [raw]
    elif isinstance(raw, Mapping):
        values = raw.values()
    elif isinstance(raw, list):
        values = raw
    else:
        return set()
    return {v.strip().lower() for v in values if isinstance(v, str) and v.strip()}


def _address_candidates(entry: Mapping[str, Any], disks: Sequence[VmDisk]) -> list[VmDisk]:
    wanted = _addresses(entry.get("address"))
    if not wanted:
        return []
    return [d for d in disks if d.address and d.address.strip().lower() in wanted]


class _Matcher:
    def __init__(self, disks: Sequence[VmDisk]) -> None:
        self.disks = [d for d in disks if d.plugged]
        self.result = MatchResult()
        self.conflicted: set[str] = set()

    def assign(self, disk: VmDisk, entry: Mapping[str, Any], source: str) -> None:
        names, name = self.result.names, entry["name"]
        if disk.disk_id in self.conflicted:
            return
        if disk.disk_id in names and names[disk.disk_id] != name:
            # Two entries name the same disk differently: trust neither.
            del names[disk.disk_id]
            del self.result.sources[disk.disk_id]
            del self.result.origins[disk.disk_id]
            self.result.guests.pop(disk.disk_id, None)
            self.conflicted.add(disk.disk_id)
            self.result.rejected["ambiguous"] += 1
            return
        names[disk.disk_id] = name
        self.result.sources.setdefault(disk.disk_id, source)
        self.result.origins.setdefault(disk.disk_id, entry_origin(entry))
        if disk.disk_id not in self.result.guests:
            # Checked again here: a host is trusted with its VMs' names no more than a guest.
            view, dropped = guest_view(entry)
            self.result.guests[disk.disk_id] = view
            self.result.rejected.update(dropped)

    def by_serial(self, reported: str, entry: Mapping[str, Any]) -> bool:
        candidates, source = _serial_candidates(normalise_serial(reported), self.disks)
        if len(candidates) > 1:
            self.result.rejected["ambiguous"] += 1
            return True
        if candidates:
            self.assign(candidates[0], entry, source)
            return True
        return False

    def by_address(self, entry: Mapping[str, Any]) -> None:
        unnamed = [d for d in self.disks if d.disk_id not in self.result.names]
        candidates = _address_candidates(entry, unnamed)
        if len(candidates) == 1:
            self.assign(candidates[0], entry, SOURCE_ADDRESS)
        else:
            self.result.rejected["ambiguous" if candidates else "unmatched"] += 1


def _usable_entry(entry: Any, result: MatchResult) -> bool:
    if not isinstance(entry, Mapping):
        result.rejected["bad_entry"] += 1
        return False
    if not valid_name(entry.get("name")):
        result.rejected["bad_name"] += 1
        return False
    return True


def match_names(disks: Sequence[VmDisk], mapping: Mapping[str, Any]) -> MatchResult:
    """Name each plugged disk of one VM from that VM's guest disk mapping.

    Serial matches are decided first; address matches then only fill in disks
    still without a name. A name given to two disks is given to neither: both
    are in ``conflicts``. Entries that fit no disk, or several, are counted as
    ``unmatched`` or ``ambiguous``; invalid names as ``bad_name``.
    """
    matcher = _Matcher(disks)
    leftovers: list[Mapping[str, Any]] = []
    for reported in sorted(mapping, key=str):
        entry = mapping[reported]
        if not _usable_entry(entry, matcher.result):
            continue
        if not (isinstance(reported, str) and matcher.by_serial(reported, entry)):
            leftovers.append(entry)
    for entry in leftovers:
        matcher.by_address(entry)
    _drop_shared_names(matcher.result)
    return matcher.result


def _drop_shared_names(result: MatchResult) -> None:
    """A name two disks got is neither's (SPEC §19): each keeps it as its conflict."""
    holders: dict[str, list[str]] = {}
    for disk_id, name in result.names.items():
        holders.setdefault(name, []).append(disk_id)
    for name, disks in holders.items():
        if len(disks) < 2:
            continue
        for disk_id in disks:
            del result.names[disk_id], result.sources[disk_id], result.origins[disk_id]
            result.conflicts[disk_id] = name
        result.rejected["duplicate_name"] += len(disks)
