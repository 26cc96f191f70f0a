"""Serial cleaning (SPEC §20): padding, "no serial" values, shared serials, ATA byte swaps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.protocol.serials import candidates, clean, drop_shared, swap_pairs, trim

SERIAL = "1a2b3c4d-5e6f-7a8b-9"  # a disk id's first 20 characters (SPEC §2)
serial_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40
)
padding = st.text(st.sampled_from(" \x00\t\r\n"), max_size=6)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (SERIAL + "   ", SERIAL),  # qemu-ga copies the descriptor untrimmed
        (SERIAL + " \x00\x00", SERIAL),  # a NUL-padded field
        ("  \x00" + SERIAL, SERIAL),  # right-justified ATA
        ((SERIAL + "\x00").encode(), SERIAL),
        ("QEMU HARDDISK", "QEMU HARDDISK"),  # inner spaces are the serial's own
        ("   ", None),
        ("\x00\x00", None),
        ("", None),
        (None, None),
    ],
)
def test_trim(raw: str | bytes | None, want: str | None) -> None:
    assert trim(raw) == want


@pytest.mark.parametrize("raw", ["0", " 0 ", "0\x00", "NO SERIAL NUMBER", "no serial number"])
def test_values_meaning_no_serial_are_absent(raw: str) -> None:
    assert trim(raw) is not None and clean(raw) is None


def test_shared_serials_name_no_disk() -> None:
    got = drop_shared({"d0": "0", "d1": "AB ", "d2": "AB", "d3": SERIAL, "d4": None})
    assert got == {"d0": None, "d1": None, "d2": None, "d3": SERIAL, "d4": None}


def test_a_swapped_ata_serial_yields_the_real_one() -> None:
    swapped = swap_pairs(SERIAL)
    assert swapped == "a1b2c3d45-6e-fa7b89-"
    assert list(candidates(swapped)) == [swapped, SERIAL]
    assert next(candidates(SERIAL)) == SERIAL  # the reported form always first


def test_a_swapped_odd_serial_whose_padding_was_trimmed_is_found() -> None:
    # "QM00005" padded to 20 bytes, swapped, then trimmed by whoever passed it on.
    reported = trim(swap_pairs("QM00005".ljust(20)))
    assert reported == "MQ0000 5"
    assert "QM00005" in candidates(reported)


@given(serial_text, padding, padding)
def test_trim_removes_exactly_the_padding(serial: str, before: str, after: str) -> None:
    assert trim(before + serial + after) == serial


@given(serial_text, st.integers(min_value=0, max_value=4))
def test_every_ata_field_unswaps_to_its_serial(serial: str, pad: int) -> None:
    field = serial.rjust(len(serial) + pad) if pad % 2 else serial.ljust(len(serial) + pad)
    reported = swap_pairs(field)
    if clean(reported) is None or clean(serial) is None:
        return  # "0" either way round: nothing to recognise
    forms = list(candidates(reported))
    assert forms[0] == trim(reported)
    assert serial in forms


@given(st.one_of(st.none(), st.text(max_size=50), st.binary(max_size=50)))
def test_cleaning_never_fails_and_never_leaves_padding(raw: str | bytes | None) -> None:
    for form in candidates(raw):
        assert form and form == trim(form) and form.upper() not in ("0", "NO SERIAL NUMBER")
    forms = list(candidates(raw))
    assert len(forms) == len(set(forms)) <= 5


@given(st.dictionaries(st.integers(), st.one_of(st.none(), st.sampled_from(["a", "a ", "b", "0"]))))
def test_drop_shared_keeps_only_serials_one_disk_reports(serials: dict[int, str | None]) -> None:
    got = drop_shared(serials)
    assert got.keys() == serials.keys()
    kept = [v for v in got.values() if v is not None]
    assert len(kept) == len(set(kept))
    assert all(v == clean(serials[k]) for k, v in got.items() if v is not None)
