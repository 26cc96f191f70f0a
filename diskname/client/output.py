"""Tables for people, JSON for scripts.

Nothing from the engine reaches the terminal raw (SPEC §19): a control
character would be obeyed (an escape sequence recolours, moves or retitles the
terminal), a bidi or zero-width one would show a text as another. :func:`safe`
writes each as its escape; JSON output escapes them by itself (ASCII only).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

# C0 and C1 controls, DEL, bidi marks, embeddings, overrides and isolates, zero-width.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060\u2066-\u2069\ufeff]"
)


def _escaped(found: Any) -> str:
    code = ord(found.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: str) -> str:
    """``text`` with every control, bidi or zero-width character written as an escape."""
    return _UNSAFE.sub(_escaped, text)


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return safe(str(value))


def when(iso: str | None) -> str:
    """An ISO time as ``2026-12-01 09:30:12`` (UTC, as stored)."""
    if not iso:
        return "-"
    return iso.replace("T", " ")[:19]


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    for row in [list(headers), *text]:
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths))  # (no strict=: 3.9)
        print(line.rstrip(), file=out)


def as_json(data: Any, out: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, sort_keys=True), file=out or sys.stdout)
