"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


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
