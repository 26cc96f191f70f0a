"""orjson's API, the part diskname uses, over the standard json module.

Output is compact UTF-8 like orjson's. Input is as strict as orjson's where
it matters for untrusted lines: ``NaN``/``Infinity`` and invalid UTF-8 are
decode errors, not values.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

OPT_INDENT_2 = 1
OPT_SORT_KEYS = 1 << 5
JSONDecodeError = json.JSONDecodeError


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def dumps(
    obj: Any, default: Callable[[Any], Any] | None = None, option: int | None = None
) -> bytes:
    """``obj`` as JSON bytes (TypeError for what JSON cannot hold, as orjson)."""
    option = option or 0
    indent = 2 if option & OPT_INDENT_2 else None
    try:
        text: bytes = json.dumps(
            obj,
            default=default,
            ensure_ascii=False,
            allow_nan=False,
            sort_keys=bool(option & OPT_SORT_KEYS),
            indent=indent,
            separators=(",", ": ") if indent else (",", ":"),
        ).encode("utf-8")
    except ValueError as exc:  # NaN, a circular reference, a lone surrogate
        raise TypeError(str(exc)) from None
    return text


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """The value of one JSON document, or :class:`JSONDecodeError`."""
    if isinstance(data, str):
        text = data
    else:
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONDecodeError(f"invalid UTF-8: {exc.reason}", "", exc.start) from None
    try:
        return _DECODER.decode(text)
    except JSONDecodeError:
        raise
    except ValueError as exc:  # NaN, Infinity
        raise JSONDecodeError(str(exc), text, 0) from None
