"""What a host may claim (SPEC §19), and the one name check, without sockets or a database."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.engine.core.claims import (
    REFUSED_ATTACHED,
    REFUSED_KNOWN,
    REFUSED_SERIAL,
    REFUSED_TWICE,
    Held,
    judge,
)
from diskname.engine.core.matching import VmDisk, match_names
from diskname.engine.core.models import NAME_PATTERN, valid_object_name

VM_A, VM_B = "a-vm", "b-vm"


def test_a_vm_keeps_its_own_and_takes_a_disk_nobody_knows() -> None:
    held = Held({("d1", VM_A): True})
    verdict = judge({VM_A: [("d1", "s1"), ("new", "s-new")]}, held)
    assert verdict.refused[VM_A] == set() and verdict.blocked[VM_A] == set()


@pytest.mark.parametrize("plugged", [True, False])
def test_a_disk_attached_to_another_vm_is_refused_plugged_or_not(plugged: bool) -> None:
    verdict = judge({VM_B: [("d1", "s1")]}, Held({("d1", VM_A): plugged}, frozenset({"d1"})))
    assert verdict.refused[VM_B] == {"d1"}
    assert verdict.reasons[VM_B] == {REFUSED_ATTACHED: 1}


def test_a_known_disk_attached_nowhere_is_not_the_hosts() -> None:
    verdict = judge({VM_B: [("d1", "s1")]}, Held(known=frozenset({"d1"})))
    assert verdict.reasons[VM_B] == {REFUSED_KNOWN: 1}


def test_a_new_disk_may_not_carry_a_known_disks_serial() -> None:
    verdict = judge({VM_B: [("fresh", "s1")]}, Held(taken_serials=frozenset({"s1"})))
    assert verdict.refused[VM_B] == {"fresh"} and verdict.reasons[VM_B] == {REFUSED_SERIAL: 1}


def test_two_vms_claiming_one_new_disk_the_first_by_id_gets_it() -> None:
    verdict = judge({VM_B: [("new", "s")], VM_A: [("new", "s")]}, Held())
    assert verdict.refused == {VM_A: set(), VM_B: {"new"}}
    assert verdict.reasons[VM_B] == {REFUSED_TWICE: 1}


def test_attached_to_both_but_plugged_elsewhere_is_kept_unplugged_here() -> None:
    held = Held({("d1", VM_A): True, ("d1", VM_B): False})
    verdict = judge({VM_B: [("d1", "s1")]}, held)
    assert verdict.refused[VM_B] == set() and verdict.blocked[VM_B] == {"d1"}
    # ... unless the VM holding it reports it no longer (both in one batch).
    verdict = judge({VM_A: [], VM_B: [("d1", "s1")]}, held)
    assert verdict.blocked[VM_B] == set()


@given(
    st.dictionaries(
        st.sampled_from(["v1", "v2", "v3"]),
        st.lists(st.tuples(st.sampled_from(["d1", "d2", "d3"]), st.just("s")), max_size=3),
    ),
    st.dictionaries(
        st.tuples(st.sampled_from(["d1", "d2", "d3"]), st.sampled_from(["v1", "v2", "v9"])),
        st.booleans(),
    ),
)
def test_no_report_ever_takes_a_disk_attached_to_another_vm(
    reported: dict[str, list[tuple[str, str]]], attachments: dict[tuple[str, str], bool]
) -> None:
    held = Held(attachments, frozenset(d for d, _ in attachments))
    verdict = judge(reported, held)
    for vm, disks in reported.items():
        for disk, _ in disks:
            if (disk, vm) not in attachments and any(d == disk for d, _ in attachments):
                assert disk in verdict.refused[vm]
    plugged: dict[str, str] = {}
    for vm, disks in reported.items():  # one VM per plugged disk, whatever was claimed
        for disk in {d for d, _ in disks} - verdict.refused[vm] - verdict.blocked[vm]:
            assert plugged.setdefault(disk, vm) == vm


def test_a_name_given_to_two_disks_is_neither_disks() -> None:
    disks = [VmDisk("d1", "SERIAL0001"), VmDisk("d2", "SERIAL0002"), VmDisk("d3", "SERIAL0003")]
    mapping = {
        "SERIAL0001": {"name": "/dev/vdb"},
        "SERIAL0002": {"name": "/dev/vdb"},
        "SERIAL0003": {"name": "/dev/vdc"},
    }
    result = match_names(disks, mapping)
    assert result.names == {"d3": "/dev/vdc"}
    assert result.conflicts == {"d1": "/dev/vdb", "d2": "/dev/vdb"}
    assert result.rejected["duplicate_name"] == 2


@pytest.mark.parametrize(
    "bad",
    ["\x1b[31m", "a\u202eb", "a\u2066b", "x\u200e", "x\u200f", "\u061cx", "a\u200bb",
     "a\u200db", "a\u2060", "\ufeffa", "a\x85", " ", "", "x" * 256],
)  # fmt: skip
def test_names_with_controls_bidi_or_zero_width_characters_are_refused(bad: str) -> None:
    assert not valid_object_name(bad)


@pytest.mark.parametrize("good", ["vm1", "Übersicht \u2013 test", "x" * 255, "日本語", "a b"])
def test_names_of_printable_text_are_taken(good: str) -> None:
    assert valid_object_name(good) and re.fullmatch(NAME_PATTERN, good)
