"""Read TOML: tomllib (3.11+), else tomli if installed, else a small reader of our own.

Debian 11 and RHEL 9 ship Python 3.9 without tomllib, and Debian 11 has no
python3-tomli either, yet the agent's unit passes ``--config``. The reader
here takes the part of TOML a diskname file needs: ``[table]`` headers,
``key = value`` with basic or literal strings, integers, floats and booleans,
comments. Anything else is a :class:`TOMLDecodeError` that says to install
tomli, never a wrong value.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

_BLANK = " \t"
_KEY = r"[A-Za-z0-9_-]+"
_TABLE = re.compile(rf"\[\s*({_KEY})\s*\]")
_PAIR = re.compile(rf"({_KEY})\s*=\s*(.+)")
# Escapes TOML and JSON share; a surrogate (\ud800..\udfff) is no character in either.
_BASIC = re.compile(
    r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\["\\bfnrt]|\\u(?![dD][89a-fA-F])[0-9A-Fa-f]{4})*)"'
)
_LITERAL = re.compile(r"'([^'\x00-\x08\x0a-\x1f\x7f]*)'")
_INT = re.compile(r"[+-]?(?:0|[1-9](?:_?[0-9])*)")
_FLOAT = re.compile(r"[+-]?(?:0|[1-9](?:_?[0-9])*)(?:\.[0-9](?:_?[0-9])*)?(?:[eE][+-]?[0-9]+)?")
_COMMENT = re.compile(r"\s*(?:#[^\x00-\x08\x0a-\x1f\x7f]*)?")


class SubsetDecodeError(ValueError):
    """A file the small reader cannot read (not TOML, or beyond its subset)."""

    def __init__(self, lineno: int, message: str) -> None:
        super().__init__(f"line {lineno}: {message}")


def _value(text: str, lineno: int) -> tuple[Any, str]:
    """One value at the start of ``text``, and what follows it."""
    basic = _BASIC.match(text)
    if basic:
        return json.loads(f'"{basic.group(1)}"', strict=False), text[basic.end() :]
    literal = _LITERAL.match(text)
    if literal:
        return literal.group(1), text[literal.end() :]
    word = re.match(r"[^\s#]+", text)
    token = word.group(0) if word else ""
    rest = text[len(token) :]
    if token in ("true", "false"):
        return token == "true", rest
    if _INT.fullmatch(token):
        return int(token.replace("_", "")), rest
    if _FLOAT.fullmatch(token) and any(c in token for c in ".eE"):
        return float(token.replace("_", "")), rest
    raise SubsetDecodeError(
        lineno, f"cannot read value {text.strip(_BLANK)!r} without tomllib (install python3-tomli)"
    )


def subset_loads(text: str) -> dict[str, Any]:
    """Parse ``text`` with the small reader (see the module's docstring)."""
    data: dict[str, Any] = {}
    table = data
    # TOML's newline is LF (or CRLF) and its white space is space and tab:
    # str.splitlines() and str.strip() know many more.
    for lineno, raw in enumerate(text.split("\n"), 1):
        line = raw.removesuffix("\r").strip(_BLANK)
        if not line or line.startswith("#"):
            continue
        header = _TABLE.match(line)
        if header and _COMMENT.fullmatch(line[header.end() :]):
            if header.group(1) in data:
                raise SubsetDecodeError(lineno, f"table [{header.group(1)}] defined twice")
            table = data[header.group(1)] = {}
            continue
        pair = _PAIR.fullmatch(line)
        if not pair:
            raise SubsetDecodeError(lineno, f"expected key = value, got {line!r}")
        key = pair.group(1)
        value, rest = _value(pair.group(2), lineno)
        if not _COMMENT.fullmatch(rest):
            raise SubsetDecodeError(lineno, f"unexpected {rest.strip()!r} after the value")
        if key in table:
            raise SubsetDecodeError(lineno, f"key {key!r} defined twice")
        table[key] = value
    return data


if TYPE_CHECKING:
    from tomllib import TOMLDecodeError, loads  # novermin (3.11+ only)
else:
    try:
        from tomllib import TOMLDecodeError, loads  # novermin (3.11+ only)
    except ImportError:
        try:
            from tomli import TOMLDecodeError, loads
        except ImportError:
            TOMLDecodeError, loads = SubsetDecodeError, subset_loads

__all__ = ["TOMLDecodeError", "loads", "subset_loads"]
