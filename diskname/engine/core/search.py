"""oVirt's ``search`` parameter: the part clients use to find VMs and disks by name.

``name=myvm``, ``name=my*`` (``*`` stands for any run of characters) and
``name="my vm"`` are understood; anything else of oVirt's search language is an
:class:`Invalid` that says what is served, so a script never gets a silently
unfiltered list. Sans-IO: the store turns a :class:`NameFilter` into SQL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import Invalid

SEARCH_MAX = 1024
_NAME_SEARCH = re.compile(
    r'\s*name\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"]+))\s*', re.IGNORECASE
)
_LIKE_SPECIAL = frozenset("\\%_")


@dataclass(frozen=True, slots=True)
class NameFilter:
    """Names equal to ``pattern``, where ``*`` matches any run of characters."""

    pattern: str
    case_sensitive: bool = True

    @property
    def like(self) -> str:
        """The pattern for SQL ``LIKE`` / ``ILIKE`` (backslash is the escape)."""
        return "".join(
            "%" if c == "*" else "\\" + c if c in _LIKE_SPECIAL else c for c in self.pattern
        )


def parse_search(text: str | None, *, case_sensitive: bool = True) -> NameFilter | None:
    """The filter of an oVirt ``search`` parameter; None when there is none."""
    if text is None or not text.strip():
        return None
    if len(text) > SEARCH_MAX:
        raise Invalid(f"search is longer than {SEARCH_MAX} characters")
    found = _NAME_SEARCH.fullmatch(text)
    if found is None:
        raise Invalid(
            f"cannot search for {text!r}: only name=VALUE is served "
            '(* matches any characters; quote a value with spaces: name="my vm")'
        )
    value = found["quoted"] if found["quoted"] is not None else found["bare"]
    if not value:
        raise Invalid("search name= needs a value")
    return NameFilter(value, case_sensitive)
