"""oVirt's search grammar (SPEC §18): terms joined with ``and`` over each collection's
fields, quoted or bare values, ``*``; refusals say what is served. Pure: no database
(the SQL's patterns are checked against PostgreSQL in tests/test_ovirt_units.py)."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diskname.engine.core.search import FIELDS, Search, Term, parse_search, schema_pattern
from diskname.engine.errors import Invalid

DISKS = FIELDS["disks"]


def test_ansibles_disk_lookup_is_three_terms() -> None:
    text = 'name="acc_disk" and Storage.name="data" and vm_names="vm"'
    assert parse_search(text, DISKS) == Search(
        (Term("name", "acc_disk"), Term("storage.name", "data"), Term("vm_names", "vm"))
    )


@pytest.mark.parametrize(
    ("collection", "text"),
    [
        ("vms", "host=h1 and status=up"),
        ("disks", "status=ok AND name=d*"),
        ("hosts", "status=up"),
        ("storagedomains", 'name="my data"'),
    ],
)
def test_each_collection_serves_its_fields(collection: str, text: str) -> None:
    assert parse_search(text, FIELDS[collection]) is not None


@pytest.mark.parametrize(
    ("collection", "text", "says"),
    [
        ("vms", "vm_names=a", "cannot search by 'vm_names'"),
        ("storagedomains", "status=active", "only name=VALUE"),
        ("disks", "name=a or name=b", "cannot search for"),
        ("disks", "name!=a", "cannot search for"),
        ("disks", "name=a and", "cannot search for"),
        ("disks", "name=a name=b", "cannot search for"),
    ],
)
def test_unknown_terms_are_refused_saying_what_is_served(
    collection: str, text: str, says: str
) -> None:
    with pytest.raises(Invalid, match=re.escape(says)):
        parse_search(text, FIELDS[collection])


_value = st.text(
    st.characters(blacklist_characters='"', blacklist_categories=["Cs", "Cc"]), min_size=1
)


@given(st.lists(st.tuples(st.sampled_from(sorted(DISKS)), _value), min_size=1, max_size=6))
def test_any_quoted_terms_parse_back(terms: list[tuple[str, str]]) -> None:
    text = " and ".join(f'{k}="{v}"' for k, v in terms)
    assert parse_search(text, DISKS) == Search(tuple(Term(k, v) for k, v in terms))


def _glob(pattern: str, name: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, name, re.DOTALL) is not None


@given(st.text("ab*.%_\\", min_size=1, max_size=6), st.text("ab*.%_\\", max_size=8))
def test_matches_is_the_glob(pattern: str, name: str) -> None:
    search = Search((Term("name", pattern),))
    assert search.matches({"name": name}) == _glob(pattern, name)


@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused(text: str) -> None:
    with contextlib.suppress(Invalid):
        parse_search(text, DISKS)


_SEARCHY = st.text(st.sampled_from(list('nameNAME= "andAND*x\t\x01é')), max_size=40)


@given(st.one_of(_SEARCHY, st.text(max_size=40)))
def test_the_documented_pattern_is_exactly_what_is_parsed(text: str) -> None:
    """/api/storagedomains' OpenAPI pattern for search (the fuzzer holds the API to it)."""
    try:
        parse_search(text, {"name"})
        parsed = True
    except Invalid:
        parsed = False
    assert (re.fullmatch(schema_pattern("name"), text) is not None) == parsed, text


def test_the_document_carries_the_pattern() -> None:
    document = json.loads(
        (Path(__file__).parent.parent / "diskname/engine/http/web/openapi.json").read_text()
    )
    (search,) = document["paths"]["/api/storagedomains"]["get"]["parameters"]
    assert search["schema"]["pattern"] == schema_pattern("name")
