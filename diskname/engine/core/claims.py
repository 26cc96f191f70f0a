"""What a host may claim for its VMs: only its own disks (pure, no I/O; SPEC §19).

A host's report names, per VM, the disks it says are plugged there. The engine
believes a report only about what is that VM's already, or about a disk it does
not know at all (a ``virsh attach-disk`` on the host, SPEC §13: the disk becomes
that VM's own). A report never attaches a disk the engine has attached to another
VM, plugged or not, and never moves one, whatever the host says: such a claim is
*refused* (no row is written for it) and counted. A disk attached to this VM but
plugged into another one is *blocked*: kept unplugged here (one VM per disk).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Why a claim was refused (the label of diskname_engine_host_claims_refused_total).
REFUSED_ATTACHED = "attached_elsewhere"  # the engine has the disk attached to another VM
REFUSED_KNOWN = "known_disk"  # the engine knows the disk, attached nowhere: not the host's
REFUSED_SERIAL = "serial_taken"  # a new disk carrying a serial another disk has
REFUSED_TWICE = "claimed_twice"  # two VMs of one batch claim one new disk
BAD_VM_NAME = "bad_vm_name"  # an adopted VM's name is not a valid name


@dataclass(frozen=True, slots=True)
class Held:
    """What the engine holds of the disks a batch reports (read in the guard)."""

    # (disk, VM) for every attachment of a reported disk, and whether it is plugged.
    attachments: Mapping[tuple[str, str], bool] = field(default_factory=dict)
    known: frozenset[str] = frozenset()  # reported disks the engine has a row for
    taken_serials: frozenset[str] = frozenset()  # serials of other known disks


@dataclass(slots=True)
class Verdict:
    """Per VM: disks refused outright, disks kept unplugged, and refusals by reason."""

    refused: dict[str, set[str]] = field(default_factory=dict)
    blocked: dict[str, set[str]] = field(default_factory=dict)
    reasons: dict[str, Counter[str]] = field(default_factory=dict)

    def _refuse(self, vm: str, disk: str, reason: str) -> None:
        self.refused[vm].add(disk)
        self.reasons.setdefault(vm, Counter())[reason] += 1


def judge(reported: Mapping[str, Iterable[tuple[str, str]]], held: Held) -> Verdict:
    """Judge each VM's reported plugged disks ``(disk id, serial)`` against ``held``.

    VMs are taken in id order, so that within a batch the first VM to report a
    disk the engine does not know gets it. A disk plugged into a VM of this batch
    that no longer reports it plugged is free to be plugged into another VM that
    holds an attachment of it.
    """
    verdict = Verdict()
    claimed = {vm: {d for d, _ in disks} for vm, disks in reported.items()}
    plugged_in = {d: vm for (d, vm), plugged in held.attachments.items() if plugged}
    for disk, vm in list(plugged_in.items()):
        if vm in claimed and disk not in claimed[vm]:
            del plugged_in[disk]
    attached = {d for d, _ in held.attachments}
    new_owner: dict[str, str] = {}
    for vm in sorted(reported):
        verdict.refused[vm], verdict.blocked[vm] = set(), set()
        for disk, serial in dict(reported[vm]).items():
            reason = _refusal(vm, disk, serial, held, attached, new_owner)
            if reason is not None:
                verdict._refuse(vm, disk, reason)
            elif plugged_in.setdefault(disk, vm) != vm:
                verdict.blocked[vm].add(disk)
    return verdict


def _refusal(
    vm: str, disk: str, serial: str, held: Held, attached: set[str], new_owner: dict[str, str]
) -> str | None:
    if (disk, vm) in held.attachments:
        return None  # this VM's own attachment
    if disk in attached:
        return REFUSED_ATTACHED
    if disk in held.known:
        return REFUSED_KNOWN
    if serial in held.taken_serials:
        return REFUSED_SERIAL
    if new_owner.setdefault(disk, vm) != vm:
        return REFUSED_TWICE
    return None
