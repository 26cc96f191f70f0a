"""oVirt's ``search`` parameter: the terms clients use to find VMs, disks, hosts, domains.

A search is terms joined with ``and``: ``name=myvm``, ``name=my*`` (``*``
stands for any run of characters), ``Storage.name="data" and vm_names=vm``.
A value is bare (no white space, no quote) or quoted (``"my vm"``). Which
fields a collection serves is :data:`FIELDS`; a term it does not serve (or
``or``, ``!=``, sorting...) is an :class:`Invalid` that says what is served, so
a script never gets a silently unfiltered list. Sans-IO: :mod:`..db.rows`
turns a :class:`Search` into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from ..errors import Invalid

SEARCH_MAX = 1024
MAX_TERMS = 16
# The fields each oVirt collection serves (lower case; oVirt's keys are not case-sensitive).
FIELDS: dict[str, frozenset[str]] = {
    "vms": frozenset({"name", "status", "host"}),
    "disks": frozenset({"name", "alias", "status", "storage.name", "vm_names"}),
    "hosts": frozenset({"name", "status"}),
    "storagedomains": frozenset({"name"}),
    "clusters": frozenset({"name"}),
    "datacenters": frozenset({"name"}),
}
# Terms are separated by spaces; a value has no control characters (nor, bare, a space).
_QUOTED, _BARE = r'[^"\x00-\x1f\x7f-\x9f]', r'[^" \x00-\x1f\x7f-\x9f]'
_TERM = re.compile(
    rf' *(?P<key>[A-Za-z_][A-Za-z0-9_.]*) *= *(?:"(?P<quoted>{_QUOTED}*)"|(?P<bare>{_BARE}+)) *'
)
_AND = re.compile(r"and +", re.IGNORECASE)


def schema_pattern(field: str) -> str:
    """The JSON Schema pattern of a search over the one field ``field`` (the OpenAPI
    document's, for ``/api/storagedomains``): exactly what :func:`parse_search` takes."""
    key = "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in field)
    term = f' *{key} *= *(?:"{_QUOTED}+" *|{_BARE}+ +|{_BARE}+$)'
    return f"^(?: *$|{term}(?:[Aa][Nn][Dd] +{term}){{0,{MAX_TERMS - 1}}}$)"


_LIKE_SPECIAL = frozenset("\\%_")


@dataclass(frozen=True, slots=True)
class Term:
    """``field`` equal to ``pattern``, where ``*`` matches any run of characters."""

    field: str
    pattern: str

    @property
    def like(self) -> str:
        """The pattern for SQL ``LIKE`` / ``ILIKE`` (backslash is the escape)."""
        return "".join(
            "%" if c == "*" else "\\" + c if c in _LIKE_SPECIAL else c for c in self.pattern
        )


@dataclass(frozen=True, slots=True)
class Search:
    """Terms that must all hold."""

    terms: tuple[Term, ...]
    case_sensitive: bool = True

    def matches(self, values: Mapping[str, str]) -> bool:
        """Whether an object with these field values is found (as the SQL would find it),
        for the few rows searched in memory (clusters, data centers)."""
        flags = 0 if self.case_sensitive else re.IGNORECASE
        for term in self.terms:
            parts = (re.escape(p) for p in term.pattern.split("*"))
            if re.fullmatch(".*".join(parts), values.get(term.field, ""), flags | re.S) is None:
                return False
        return True


def name_search(pattern: str, case_sensitive: bool = True) -> Search:
    """The search ``name=<pattern>``."""
    return Search((Term("name", pattern),), case_sensitive)


def parse_search(
    text: str | None, fields: Collection[str] = FIELDS["vms"], *, case_sensitive: bool = True
) -> Search | None:
    """The terms of an oVirt ``search`` parameter over ``fields``; None when there is none."""
    if text is None or not text.strip(" "):
        return None
    if len(text) > SEARCH_MAX:
        raise Invalid(f"search is longer than {SEARCH_MAX} characters")
    terms: list[Term] = []
    at = 0
    while True:
        found = _TERM.match(text, at)
        if found is None:
            raise Invalid(_refusal(text, fields))
        key = found["key"].lower()
        if key not in fields:
            raise Invalid(f"cannot search by {found['key']!r}: {_served(fields)}")
        value = found["quoted"] if found["quoted"] is not None else found["bare"]
        if not value:
            raise Invalid(f"search {found['key']}= needs a value")
        terms.append(Term(key, value))
        if len(terms) > MAX_TERMS:
            raise Invalid(f"a search has at most {MAX_TERMS} terms")
        at = found.end()
        if at == len(text):
            return Search(tuple(terms), case_sensitive)
        joined = _AND.match(text, at)
        if joined is None:
            raise Invalid(_refusal(text, fields))
        at = joined.end()


def _served(fields: Collection[str]) -> str:
    return f"only {', '.join(sorted(f + '=VALUE' for f in fields))} (joined with and) are served"


def _refusal(text: str, fields: Collection[str]) -> str:
    return (
        f"cannot search for {text[:80]!r}: {_served(fields)} "
        '(* matches any characters; quote a value with spaces: name="my vm")'
    )
