"""Match a guest's disk mapping to the disks plugged into its VM (pure, no I/O).

The only identity the guest shares with management is the serial the
hypervisor gave each disk (SPEC §2). Guests report it bare, bus-prefixed
(``0QEMU_QEMU_HARDDISK_<s>``), padded with spaces or NULs, cut short, or (old
Windows, ATA) with every two bytes swapped, so a reported serial is tried in
each form :func:`diskname.protocol.serials.candidates` gives, the reported one
first: a form matches a disk when, stripped of white space, it equals the
disk's serial or ends with it, or when it is a long enough prefix of exactly
one disk's serial. A later form is tried only when the earlier ones match
nothing. A serial that means "none" (``0``) and a failed serial go to the
address fallback: the guest's reported address may equal the address the host
gave the device, on the right bus (:func:`_address_candidates`). Anything
ambiguous is dropped and counted: a wrong name is worse than no name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import islice
from typing import Any

from ...protocol.guest_view import View, guest_view
from ...protocol.names import is_windows_name, refusal, valid_device_path
from ...protocol.serials import NO_SERIAL, clean
from ...protocol.serials import candidates as serial_forms

MIN_TRUNCATED_SERIAL = 8

SOURCE_SERIAL = "serial"
SOURCE_SERIAL_PREFIX = "serial-prefix"
SOURCE_ADDRESS = "address"

# Disks on a PCI function of their own; every other interface sits behind a
# controller, at a SCSI address (``0:0:0:<lun>``).
PCI_INTERFACES = frozenset({"virtio", "nvme"})
# The keys of entries without a serial (SPEC §2): matched by their address alone.
FALLBACK_KEYS = ("address:", "name:")
# What a reported "no serial" becomes without its white space: never an exact match.
_NO_SERIAL_KEYS = frozenset("".join(s.split()) for s in NO_SERIAL)


@dataclass(frozen=True, slots=True)
class VmDisk:
    """A disk of the VM as the host describes it (``iface`` None: bus unknown)."""

    disk_id: str
    serial: str
    plugged: bool = True
    address: str | None = None
    iface: str | None = None


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
    # Why each refused name (rejected as ``bad_name``) was refused: names.refusal().
    refused: dict[str, int] = field(default_factory=dict)
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


def _near_candidates(reported: str, disks: Sequence[VmDisk]) -> tuple[list[VmDisk], str]:
    """The disks whose serial ``reported`` ends with, else those it is a long prefix of."""
    suffix = [d for d in disks if d.serial and reported.endswith(d.serial)]
    if suffix:
        return suffix, SOURCE_SERIAL
    return _truncated_candidates(reported, disks), SOURCE_SERIAL_PREFIX


def _truncated_candidates(reported: str, disks: Sequence[VmDisk]) -> list[VmDisk]:
    # A cut-short serial may still carry a bus prefix: try the text after the last "_".
    tails = {reported, reported.rsplit("_", 1)[-1]}
    tails = {t for t in tails if len(t) >= MIN_TRUNCATED_SERIAL}
    return [d for d in disks if d.serial and any(d.serial.startswith(t) for t in tails)]


def _text(value: Any) -> str | None:
    return value.strip().lower() or None if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class _Where:
    """Where an entry says its disk is, from its ``address`` and ``bus``.

    ``pci``: texts that may name the disk's own PCI function; ``scsi``: texts
    that may name its SCSI address. A bare string (or list) address may be
    either; an object says which (``{"pci", "scsi"}``), and its ``pci`` is then
    also the ``controller`` a disk behind one hangs on.
    """

    pci: frozenset[str]
    scsi: frozenset[str]
    controller: str | None = None
    bus: str | None = None
    pci_only: bool = False


def _only(text: str | None) -> frozenset[str]:
    return frozenset() if text is None else frozenset((text,))


def _where(entry: Mapping[str, Any], unknown_serial: bool) -> _Where | None:
    """Where ``entry`` puts its disk; ``unknown_serial``: it has a serial no disk matched.

    A Windows entry with such a serial is taken for a virtio-blk/NVMe disk's
    only: Windows puts those at SCSI 0/0/0 too, and the serial is most likely a
    disk that has just left the VM (qemu-ga's answer lags an unplug), whose
    PCI function the VM no longer shows, so only the SCSI address would match.
    """
    raw, bus = entry.get("address"), _text(entry.get("bus"))
    if isinstance(raw, Mapping):
        pci, scsi = _text(raw.get("pci")), _text(raw.get("scsi"))
        if pci is None and scsi is None:
            return None
        pci_only = unknown_serial and is_windows_name(entry["name"])
        return _Where(_only(pci), _only(scsi), pci, bus, pci_only)
    values: Iterable[Any] = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    found = frozenset(t for t in map(_text, values) if t is not None)
    return _Where(found, found, None, bus) if found else None


def _fits(iface: str | None, address: str, where: _Where, pci_disks: frozenset[str]) -> bool:
    """Whether a disk on ``iface`` at ``address`` is where ``where`` says, on a bus that can be.

    A virtio-blk or NVMe disk is its own PCI function. A disk behind a
    controller (virtio-scsi, SATA) has a SCSI address, which is not enough:
    Windows reports a virtio-blk disk as SCSI 0/0/0 with the disk's own PCI
    function beside it, so an entry whose PCI address is a virtio-blk/NVMe
    disk's, or whose bus is virtio/NVMe, is no controller disk's. A disk of
    unknown interface matches either address.
    """
    if iface is None:
        return address in where.pci or address in where.scsi
    if iface in PCI_INTERFACES:
        return address in where.pci
    return (
        address in where.scsi
        and not where.pci_only
        and where.controller not in pci_disks
        and where.bus not in PCI_INTERFACES
    )


class _Matcher:
    def __init__(self, disks: Sequence[VmDisk]) -> None:
        self.all_disks = disks
        self.disks = [d for d in disks if d.plugged]
        self.exact: dict[str, list[VmDisk]] = {}
        for disk in self.disks:
            if disk.serial and disk.serial.upper() not in _NO_SERIAL_KEYS:
                self.exact.setdefault(disk.serial, []).append(disk)
        self.result = MatchResult()
        self.conflicted: set[str] = set()

    @cached_property
    def pci_disks(self) -> frozenset[str]:
        """The addresses of the VM's virtio-blk and NVMe disks, plugged or not."""
        found = (_text(d.address) for d in self.all_disks if d.iface in PCI_INTERFACES)
        return frozenset(t for t in found if t is not None)

    def assign(self, disk: VmDisk, entry: Mapping[str, Any], source: str) -> None:
        names, name = self.result.names, entry["name"]
        if disk.disk_id in self.conflicted:
            return
        if disk.disk_id in names and _name_key(names[disk.disk_id]) != _name_key(name):
            # Two entries name the same disk differently: trust neither.
            del names[disk.disk_id]
            del self.result.sources[disk.disk_id]
            del self.result.origins[disk.disk_id]
            self.result.guests.pop(disk.disk_id, None)
            self.conflicted.add(disk.disk_id)
            self.result.rejected["ambiguous"] += 1
            return
        names.setdefault(disk.disk_id, name)
        self.result.sources.setdefault(disk.disk_id, source)
        self.result.origins.setdefault(disk.disk_id, entry_origin(entry))
        if disk.disk_id not in self.result.guests:
            # Checked again here: a host is trusted with its VMs' names no more than a guest.
            view, dropped = guest_view(entry)
            self.result.guests[disk.disk_id] = view
            self.result.rejected.update(dropped)

    def by_serial(self, reported: str, entry: Mapping[str, Any]) -> bool:
        """Match by each form of the serial in turn; False: leave it to the address.

        The forms are :func:`serial_forms`'s; the first is found sooner here
        when the key has no NUL (the usual case, and a hot path).
        """
        exact = self.exact.get(reported)
        if exact is not None and len(exact) == 1:  # the bare serial, soonest
            self.assign(exact[0], entry, SOURCE_SERIAL)
            return True
        if reported.startswith(FALLBACK_KEYS):
            return False
        forms: Iterable[str] = serial_forms(reported)
        if "\x00" not in reported:
            text = reported.strip()  # serials.clean, for a key without NULs
            if not text or text.upper() in NO_SERIAL:
                return False  # "0" and the like: no serial at all
            if self.by_form(normalise_serial(text), entry):
                return True
            forms = islice(forms, 1, None)
        return any(self.by_form(normalise_serial(form), entry) for form in forms)

    def by_form(self, form: str, entry: Mapping[str, Any]) -> bool:
        """Match by one form of a serial; False if it matches no disk."""
        found = self.exact.get(form, [])
        source = SOURCE_SERIAL
        if len(found) != 1:
            found, source = _near_candidates(form, self.disks)
        if len(found) > 1:
            self.result.rejected["ambiguous"] += 1
            return True
        if found:
            self.assign(found[0], entry, source)
            return True
        return False

    @cached_property
    def addressed(self) -> list[tuple[VmDisk, str]]:
        """The plugged disks with an address, and that address as compared."""
        found = ((d, _text(d.address)) for d in self.disks)
        return [(d, address) for d, address in found if address is not None]

    def by_address(self, entry: Mapping[str, Any], unknown_serial: bool) -> None:
        where = _where(entry, unknown_serial)
        found: list[VmDisk] = []
        if where is not None:
            names, pci_disks = self.result.names, self.pci_disks
            found = [
                d
                for d, address in self.addressed
                if d.disk_id not in names and _fits(d.iface, address, where, pci_disks)
            ]
        if len(found) == 1:
            self.assign(found[0], entry, SOURCE_ADDRESS)
        else:
            self.result.rejected["ambiguous" if found else "unmatched"] += 1


def _is_serial(key: Any) -> bool:
    """Whether a mapping key is a serial (not "0", not an ``address:``/``name:`` key)."""
    return isinstance(key, str) and not key.startswith(FALLBACK_KEYS) and clean(key) is not None


def _usable_entry(entry: Any, result: MatchResult) -> bool:
    if not isinstance(entry, Mapping):
        result.rejected["bad_entry"] += 1
        return False
    name = entry.get("name")
    if not valid_device_path(name):
        why = refusal(name) or "not_device_path"
        result.rejected["bad_name"] += 1
        result.refused[why] = result.refused.get(why, 0) + 1
        return False
    return True


def match_names(disks: Sequence[VmDisk], mapping: Mapping[str, Any]) -> MatchResult:
    """Name each plugged disk of one VM from that VM's guest disk mapping.

    Serial matches are decided first; address matches then only fill in disks
    still without a name. A name given to two disks (compared as
    :func:`~diskname.protocol.names.name_key` does) is given to neither: both
    are in ``conflicts``. Entries that fit no disk, or several, are counted as
    ``unmatched`` or ``ambiguous``; invalid names as ``bad_name`` (and why, in
    ``refused``).
    """
    matcher = _Matcher(disks)
    leftovers: list[tuple[Mapping[str, Any], bool]] = []
    for reported in sorted(mapping, key=str):
        entry = mapping[reported]
        if not _usable_entry(entry, matcher.result):
            continue
        if not (isinstance(reported, str) and matcher.by_serial(reported, entry)):
            leftovers.append((entry, _is_serial(reported)))
    for entry, unknown_serial in leftovers:
        matcher.by_address(entry, unknown_serial)
    _drop_shared_names(matcher.result)
    return matcher.result


def _name_key(name: str) -> str:
    """:func:`~diskname.protocol.names.name_key` for a name already valid, sooner (a hot path).

    A valid name that starts with a backslash is ``\\\\.\\PHYSICALDRIVE<n>`` in some case.
    """
    return name.upper() if name[:1] == "\\" else name


def _drop_shared_names(result: MatchResult) -> None:
    """A name two disks got is neither's (SPEC §19): each keeps it as its conflict."""
    holders: dict[str, list[str]] = {}
    for disk_id, name in result.names.items():
        holders.setdefault(_name_key(name), []).append(disk_id)
    for disks in holders.values():
        if len(disks) < 2:
            continue
        for disk_id in disks:
            result.conflicts[disk_id] = result.names[disk_id]
            del result.names[disk_id], result.sources[disk_id], result.origins[disk_id]
        result.rejected["duplicate_name"] += len(disks)
